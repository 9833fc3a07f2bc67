"""Pytest fixtures for the board doubles; test modules import the ones they use."""
from __future__ import annotations

import pytest

from . import rkllm_stub


@pytest.fixture(scope="session")
def stub_build(tmp_path_factory):
    """stub_build(layout, version) -> path of the C stub of librkllmrt.so, compiled once per session."""
    if rkllm_stub.compiler() is None:
        pytest.skip("no C compiler (gcc) on PATH: the librkllmrt.so stub cannot be built (apt install gcc)")
    directory = tmp_path_factory.mktemp("rkllm-stub")

    def build(layout: str, version: str | None):
        return rkllm_stub.build(layout, version, directory)

    return build


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    """An empty config file as $RKVIDEO_CONFIG, so no user or repo config leaks in."""
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv("RKVIDEO_CONFIG", str(path))
    return path
