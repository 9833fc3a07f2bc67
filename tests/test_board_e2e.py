"""`rkvideo describe` on a .rknn + .rkllm config, end to end through the CLI, against the doubles:
FakeRKNNLite (running the encoder's real ONNX twin) for the three NPU cores and the C stub of
librkllmrt.so, which answers with a JSON record of everything it received."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

import footage
from doubles import rkllm_stub
from doubles.fake_rknnlite import FakeRKNNLite, write_rknn
from doubles.fixtures import stub_build  # noqa: F401 (fixture)
from rkvideo import cli, models
from rkvideo.vision import rknn

pytest.importorskip("onnxruntime", reason="needs the [cpu] extra: pip install -e '.[cpu]'")
pytest.importorskip("onnx", reason="needs the [cpu] extra: pip install -e '.[cpu]'")

# 112² in 28-pixel patches gives 16 tokens: the Qwen2-VL arithmetic (14-pixel patches merged 2×2), so the
# side the encoder's token count implies agrees with model.input_size, as for a real encoder.
SIZE, TOKENS, WIDTH = 112, 16, 32
VERSIONS = {"1.2": "1.2.3", "1.3": "1.3.0"}

CONFIG = """[model]
profile = "qwen2-vl-2b"
vision = "{vision}"
llm = "llm.rkllm"
input_size = {size}
tokens_per_image = {tokens}
embed_width = {width}

[vision]
workers = 3

[llm]
library = "{library}"
runtime = "auto"
max_new_tokens = 2000

[describe]
frames = 4
"""


@pytest.fixture(scope="module")
def media_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("board-media")
    return {"clip": footage.make_clip(root / "clip.mp4", seconds=2.0, fps=10, size=(192, 108)),
            "images": [footage.make_image(root / f"shot{k}.jpg", size=(160, 120), number=k) for k in range(2)]}


@pytest.fixture(params=["1.2", "1.3"])
def board(request, tmp_path, stub_build, monkeypatch):
    """A config dir with vision.rknn (+ its ONNX twin), llm.rkllm (stub model) and the stub library."""
    from rkvideo import selftest
    layout = request.param
    lib = stub_build(layout, VERSIONS[layout])
    rkllm_stub.reset(lib)
    selftest.build_encoder(tmp_path / "vision.onnx", size=SIZE, patch=28, width=WIDTH)
    write_rknn(tmp_path / "vision.rknn", mean=models.CLIP_MEAN, std=models.CLIP_STD)
    rkllm_stub.write_model(tmp_path / "llm.rkllm", embed_width=WIDTH, reply="echo")
    for vision in ("vision.rknn", "vision.onnx"):
        (tmp_path / f"{vision.split('.')[1]}.toml").write_text(
            CONFIG.format(vision=vision, size=SIZE, tokens=TOKENS, width=WIDTH, library=lib))
    FakeRKNNLite.reset()
    monkeypatch.setattr(rknn, "_load_class", lambda: FakeRKNNLite)
    yield layout, tmp_path, lib
    FakeRKNNLite.reset()


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_describe_a_clip_on_the_board_path(board, media_files, capsys):
    layout, root, lib = board
    code, [res], err = run(capsys, "describe", media_files["clip"], "--config", root / "rknn.toml", "--json")
    assert code == 0, err
    # The user sees which struct layout was picked, and why, without running doctor.
    assert f"RKLLM struct layout {layout} (version string {VERSIONS[layout]} in the library)" in err
    record = json.loads(res["text"])         # the stub's reply: what the binding passed it
    init, call = record["init"], record["run"]
    assert init["base_domain_id"] == 1       # the encoder is an .rknn: the LLM moves to NPU domain 1
    assert (call["n_image"], call["n_image_tokens"], call["image_width"]) == (4, TOKENS, SIZE)
    assert call["embed_count"] == 4 * TOKENS * WIDTH and call["keep_history"] == 0
    assert call["placeholders"] == (1 if layout == "1.2" else 4)
    # The profile's chat template was set on the handle, so the runtime wraps the prompt as documented.
    chat = models.get("qwen2-vl-2b").chat
    assert record["template"] == {"system": chat.system, "prefix": chat.prefix, "postfix": chat.postfix, "calls": 1}
    assert call["templated"] == chat.system + chat.prefix + call["prompt"] + chat.postfix
    assert [f["index"] for f in res["frames"]] == [0, 1, 2, 3]
    # From the runtime's perf at FINISH (the pipeline rounds to 0.1 ms).
    assert res["timings"]["prefill"] == pytest.approx(0.1255, abs=1e-3)
    assert res["timings"]["generate"] == pytest.approx(0.25025, abs=1e-3)
    assert {"decode", "preprocess", "encode", "vision"} <= set(res["timings"])
    assert res["tokens"]["new"] == rkllm_stub.state(lib)["normal_calls"]
    # Three instances, one per core, all used by one thread at a time and all released.
    assert [i.core_mask for i in FakeRKNNLite.instances] == [1, 2, 4]
    assert sum(i.calls for i in FakeRKNNLite.instances) == 4 + 3
    assert FakeRKNNLite.violations == [] and all(i.released for i in FakeRKNNLite.instances)
    assert rkllm_stub.state(lib)["n_destroy"] == 1

    # The same clip through the portable ONNX encoder gives the LLM the same numbers: the board's
    # uint8 NHWC + baked mean/std path matches host normalisation.
    code, [twin], err = run(capsys, "describe", media_files["clip"], "--config", root / "onnx.toml", "--json")
    assert code == 0, err
    other = json.loads(twin["text"])["run"]
    assert json.loads(twin["text"])["init"]["base_domain_id"] == 0
    assert other["embed_sum"] == pytest.approx(call["embed_sum"], rel=1e-4, abs=1e-2)
    assert other["embed_weighted"] == pytest.approx(call["embed_weighted"], rel=1e-4)
    assert other["embed_first"] == pytest.approx(call["embed_first"], abs=1e-4)


def test_describe_images_on_the_board_path(board, media_files, capsys):
    layout, root, lib = board
    code, [res], err = run(capsys, "describe", *media_files["images"], "--config", root / "rknn.toml", "--json")
    assert code == 0, err
    call = json.loads(res["text"])["run"]
    assert (call["n_image"], call["placeholders"]) == (2, 1 if layout == "1.2" else 2)
    assert call["prompt"].endswith("Describe these images.")


def test_text_streams_to_stdout(board, media_files, capsys):
    _, root, lib = board
    rkllm_stub.write_model(root / "llm.rkllm", embed_width=WIDTH, reply="text", text="Ein Hund — 犬 🐕.", chunk=1)
    code = cli.main(["describe", str(media_files["clip"]), "--config", str(root / "rknn.toml")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "Ein Hund — 犬 🐕.\n"


def test_sigterm_aborts_the_run_and_everything_is_released(board, media_files, capsys):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    _, root, lib = board
    rkllm_stub.write_model(root / "llm.rkllm", embed_width=WIDTH, reply="wait_abort")

    def terminate_when_generating():
        deadline = time.monotonic() + 20
        while not rkllm_stub.state(lib)["running"] and time.monotonic() < deadline:
            time.sleep(0.005)   # waiting for a condition, not passing time
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=terminate_when_generating)
    helper.start()
    try:
        code = cli.main(["describe", str(media_files["clip"]), "--config", str(root / "rknn.toml")])
    finally:
        helper.join()
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err
    state = rkllm_stub.state(lib)
    assert state["n_abort"] >= 1 and state["running"] == 0 and state["n_destroy"] == 1
    assert all(i.released for i in FakeRKNNLite.instances)


def test_a_failing_npu_core_is_an_error_naming_the_frame(board, media_files, capsys):
    _, root, lib = board
    calls = {"n": 0}

    def third_frame_fails(instance, array):
        calls["n"] += 1
        return calls["n"] == 3 + 3   # after the three warm-ups, the third frame encoded

    FakeRKNNLite.fail_when = third_frame_fails
    code, out, err = run(capsys, "describe", media_files["clip"], "--config", root / "rknn.toml", "--json")
    assert code == 1 and out == []
    assert "RKNNLite.inference failed on NPU core" in err and "frame " in err
    assert rkllm_stub.state(lib)["n_run"] == 0
    assert all(i.released for i in FakeRKNNLite.instances) and rkllm_stub.state(lib)["n_destroy"] == 1


def test_runtime_layout_that_cannot_be_told_is_a_clear_error(board, stub_build, media_files, capsys):
    layout, root, _ = board
    config = root / "rknn.toml"
    config.write_text(config.read_text().replace(str(stub_build(layout, VERSIONS[layout])),
                                                 str(stub_build(layout, None))))
    code, out, err = run(capsys, "describe", media_files["clip"], "--config", config, "--json")
    assert code == 1 and out == []
    assert 'cannot tell the runtime\'s struct layout' in err and 'llm.runtime = "1.2"' in err
    assert FakeRKNNLite.instances == []    # nothing was loaded on the NPU


def test_smolvlm2_on_the_board_path(board, media_files, capsys):
    """A SmolVLM2 config (Qengineering's 384² conversions; here the stand-in encoder's sizes): the Qwen tags
    and SmolVLM's own chat template reach the runtime, which could not parse that template by itself."""
    layout, root, lib = board
    config = root / "smol.toml"
    config.write_text((root / "rknn.toml").read_text().replace('profile = "qwen2-vl-2b"', 'profile = "smolvlm2-500m"'))
    code, [res], err = run(capsys, "describe", media_files["clip"], "--config", config, "--json")
    assert code == 0, err
    record = json.loads(res["text"])
    assert (record["template"]["system"], record["template"]["prefix"]) == ("<|im_start|>", "User:")
    assert record["run"]["templated"].endswith("<end_of_utterance>\nAssistant:")
    tags = record["init"] if layout == "1.2" else record["run"]
    keys = ("img_start", "img_end", "img_content") if layout == "1.2" else ("image_start", "image_end", "image_content")
    assert tuple(tags[k] for k in keys) == models.QWEN_TAGS


def test_a_failing_rkllm_init_names_the_familys_minimum_runtime(board, media_files, capsys):
    layout, root, lib = board
    rkllm_stub.write_model(root / "llm.rkllm", embed_width=WIDTH, init_rc=-1)
    config = root / "internvl.toml"
    config.write_text((root / "rknn.toml").read_text().replace('profile = "qwen2-vl-2b"', 'profile = "internvl3-1b"'))
    code, out, err = run(capsys, "describe", media_files["clip"], "--config", config, "--json")
    assert code == 1 and out == []
    assert "rkllm_init failed (return code -1" in err
    assert f"profile internvl3-1b (internvl3) needs RKLLM runtime ≥ 1.2.2; this library: {VERSIONS[layout]}" in err
    assert FakeRKNNLite.instances == []    # the LLM loads first; nothing was put on the NPU
