"""A model file that is wrong is the configuration's fault: exit status 2, which systemd does not restart
(issue 9, item 10). Real corrupt files, the real runtimes (ONNX Runtime, llama.cpp), the real command line
and the real daemon (`rkvideo watch --once` ends with Outcome.CONFIGURATION_ERROR)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from doubles import daemon

pytestmark = pytest.mark.cpu


def config_for(tmp_path, tiny_models, name: str, *, vision=None, llm=None):
    """The self-test's config with model.vision / model.llm pointing at the given files."""
    text = tiny_models.config.read_text()
    text = text.replace('vision = "encoder.onnx"', f'vision = "{vision or tiny_models.encoder}"')
    text = text.replace('llm = "llm.gguf"', f'llm = "{llm or tiny_models.llm}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def broken_models(tmp_path, tiny_models) -> dict:
    """name -> (config, what the one error line must say)."""
    encoder, gguf = tiny_models.encoder.read_bytes(), tiny_models.llm.read_bytes()
    files = tmp_path / "models"
    files.mkdir()
    gguf_as_onnx = files / "llm-named.onnx"
    gguf_as_onnx.write_bytes(gguf)
    cut_onnx = files / "cut.onnx"
    cut_onnx.write_bytes(encoder[:len(encoder) // 2])
    onnx_as_gguf = files / "encoder-named.gguf"
    onnx_as_gguf.write_bytes(encoder)
    cut_gguf = files / "cut.gguf"
    cut_gguf.write_bytes(gguf[:len(gguf) // 2])
    folder = files / "folder.gguf"
    folder.mkdir()
    gguf_as_rkllm = files / "llm.rkllm"
    gguf_as_rkllm.write_bytes(gguf)
    unknown = files / "model.bin"
    unknown.write_bytes(gguf)
    cases = {
        "gguf named .onnx": ({"vision": gguf_as_onnx}, f"{gguf_as_onnx}: this is a GGUF file (an LLM for llama.cpp)"),
        "truncated onnx": ({"vision": cut_onnx}, f"{cut_onnx}: cannot load the ONNX model"),
        "onnx named .gguf": ({"llm": onnx_as_gguf}, f"{onnx_as_gguf}: not a GGUF file"),
        "truncated gguf": ({"llm": cut_gguf}, f"{cut_gguf}: llama.cpp cannot load this GGUF"),
        "a folder": ({"llm": folder}, f"{folder}: is a folder, not a model file"),
        "gguf named .rkllm": ({"llm": gguf_as_rkllm}, f"{gguf_as_rkllm}: this is a GGUF file"),
        "unknown type": ({"llm": unknown}, f"{unknown}: unknown LLM file type '.bin'"),
        "encoder against the profile": ({}, "model.tokens_per_image = 16 in config.toml"),
    }
    made = {}
    for n, (name, (models, words)) in enumerate(cases.items()):
        config = config_for(tmp_path, tiny_models, f"case{n}", **models)
        if name == "encoder against the profile":
            config.write_text(config.read_text().replace("tokens_per_image = 16", "tokens_per_image = 25"))
        made[name] = (config, words)
    return made


def run_each(commands: list) -> list:
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=daemon.environment()) for command in commands]
    return [(proc.args, proc.wait(timeout=120), proc.stderr.read()) for proc in procs]


def test_a_wrong_or_corrupt_model_file_makes_describe_exit_2(tmp_path, tiny_models):
    cases = broken_models(tmp_path, tiny_models)
    results = run_each([[sys.executable, "-m", "rkvideo", "describe", str(tiny_models.clip), "--config",
                         str(config)] for config, _ in cases.values()])
    for (name, (_, words)), (_, code, err) in zip(cases.items(), results):
        lines = err.splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("rkvideo: error: ") and words in lines[0], (name, err)


def test_the_daemon_stops_with_a_configuration_error_on_a_corrupt_model(tmp_path, tiny_models):
    folder = tmp_path / "cameras"
    folder.mkdir()
    shutil.copyfile(tiny_models.clip, folder / "clip.mp4")
    cases = broken_models(tmp_path, tiny_models)
    picked = ["truncated onnx", "truncated gguf", "gguf named .onnx", "a folder"]
    results = run_each([daemon.command("watch", folder, "--once", "--db", tmp_path / f"{n}.db", "--config",
                                       cases[name][0]) for n, name in enumerate(picked)])
    for name, (_, code, err) in zip(picked, results):
        assert code == 2, (name, err)                      # Outcome.CONFIGURATION_ERROR: no restart
        assert cases[name][1] in err and "Traceback" not in err, (name, err)


def test_the_tiny_models_themselves_still_load(tmp_path, tiny_models):
    """The checks refuse only what is wrong: the self-test's own files describe (status 0)."""
    [(_, code, err)] = run_each([[sys.executable, "-m", "rkvideo", "describe", str(tiny_models.clip),
                                  "--config", str(tiny_models.config)]])
    assert code == 0, err
