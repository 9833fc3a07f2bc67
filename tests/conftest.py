"""Shared test setup: make tests/ importable (media helpers, doubles), keep hubs offline,
and build the self-test's tiny models once per session for the tests that need the [cpu] extra."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CPU_EXTRA = "needs the [cpu] extra: pip install -e '.[cpu]'"


def need_cpu_extra(*modules: str) -> None:
    """Skip with one reason when a module of the [cpu] extra is missing."""
    for module in modules:
        pytest.importorskip(module, reason=CPU_EXTRA)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The self-test's workdir, built once: tiny ONNX encoder + GGUF LLM, config.toml, a clip, two images."""
    need_cpu_extra("onnx", "gguf", "tokenizers", "onnxruntime", "llama_cpp")
    from rkvideo import selftest
    return selftest.build_workdir(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """scenes(name, Scene) -> a camera-like recording (tests/camera.py), made once per session."""
    import camera
    folder = tmp_path_factory.mktemp("scenes")
    return lambda name, scene: camera.cached(name, scene, folder)
