"""The Describer with runtimes registered by the test: typed results, the memory domain the
vision runtime asks for, abort, and the registries themselves. No model, no third-party runtime."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import footage
from doubles.encoders import ScriptedEncoder
from rkvideo import assemble, config as config_mod, llm, pipeline, vision
from rkvideo.modelfile import ModelFileError
from rkvideo.pipeline import Kind, Timings, Tokens

JSON_KEYS = ["inputs", "kind", "frames", "prompt", "model", "tokens", "frames_capped_by_budget", "timings",
             "text", "notes", "plan"]


class CountingLLM:
    """An LLM double: answers with the number of images it got, and records how it was opened."""

    path = "counting.llm-double"
    placeholder_rule = assemble.PER_IMAGE

    def __init__(self, profile, npu_vision: bool):
        self.input_width = profile.encoder_width
        self.npu_vision = npu_vision
        self.aborts = 0
        self.closed = False

    def generate(self, request, on_text=None) -> llm.Generation:
        text = f"{request.n_images} images"
        if on_text:
            on_text(text)
        return llm.Generation(text, request.prompt_tokens + request.vision_tokens, 2,
                              {"prefill": 0.01, "generate": 0.02})

    def abort(self) -> None:
        self.aborts += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def opened():
    """Three runtimes only this test can select: an "NPU" and a "CPU" encoder, and an LLM."""
    seen: dict = {}

    def open_encoders(path, profile, workers):
        return [ScriptedEncoder(path) for _ in range(workers)]

    def open_llm(path, config, profile, npu_vision):
        seen["llm"] = CountingLLM(profile, npu_vision)
        return seen["llm"]

    with vision.register(".npu-double", vision.pooled(open_encoders), npu=True), \
            vision.register(".cpu-double", vision.pooled(open_encoders)), \
            llm.register(".llm-double", open_llm):
        yield seen


def make_config(tmp_path, encoder: str) -> config_mod.Config:
    cfg = config_mod.Config()
    for name in (encoder, "model.llm-double"):
        (tmp_path / name).write_text("a test double's model\n")
    cfg.model.vision, cfg.model.llm = str(tmp_path / encoder), str(tmp_path / "model.llm-double")
    cfg.model.input_size, cfg.model.tokens_per_image, cfg.model.embed_width = 32, 4, 3   # ScriptedEncoder's
    cfg.vision.workers = 2
    return cfg


@pytest.mark.parametrize("encoder, npu", [("enc.npu-double", True), ("enc.cpu-double", False)])
def test_the_vision_runtime_decides_the_llm_memory_domain(opened, tmp_path, encoder, npu):
    with pipeline.Describer(make_config(tmp_path, encoder)):
        assert opened["llm"].npu_vision is npu
    assert opened["llm"].closed


def test_a_video_gives_a_typed_result_and_the_same_json(opened, tmp_path):
    clip = footage.make_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10)
    streamed = []
    with pipeline.Describer(make_config(tmp_path, "enc.npu-double")) as describer:
        result = describer.describe_video(clip, frames=3, on_text=streamed.append)
    assert result.kind is Kind.VIDEO and result.kind == "video" and f"{result.kind}" == "video"
    assert result.inputs == [str(clip)] and len(result.frames) == 3
    assert result.text == "3 images" and streamed == ["3 images"]
    assert isinstance(result.tokens, Tokens) and result.tokens.vision == 3 * (4 + 2) and result.tokens.new == 2
    assert isinstance(result.timings, Timings) and {"decode", "encode", "vision", "prefill"} <= set(result.timings)
    data = json.loads(json.dumps(result.as_json()))
    assert list(data) == JSON_KEYS
    assert data["kind"] == "video" and data["tokens"] == result.tokens.as_dict()
    assert list(data["tokens"]) == ["prompt", "vision", "new"]


def test_images_are_one_request(opened, tmp_path):
    shots = [footage.make_image(tmp_path / f"shot{k}.jpg", number=k) for k in range(2)]
    with pipeline.Describer(make_config(tmp_path, "enc.cpu-double")) as describer:
        result = describer.describe_images(shots)
    assert result.kind is Kind.IMAGES and result.as_json()["kind"] == "images"
    assert [f["source"] for f in result.frames] == [str(p) for p in shots] and result.text == "2 images"
    assert result.prompt == config_mod.Config().describe.image_prompt


def test_a_dry_run_loads_nothing_and_plans(tmp_path):
    clip = footage.make_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10)
    with pipeline.Describer(config_mod.Config(), dry_run=True) as describer:
        result = describer.describe_video(clip, frames=2)
        describer.abort()                      # nothing to stop: no LLM was loaded
    assert result.text is None and result.tokens.new == 0 and len(result.frames) == 2
    assert set(result.timings) == {"decode", "preprocess"}


def test_abort_reaches_the_llm(opened, tmp_path):
    with pipeline.Describer(make_config(tmp_path, "enc.cpu-double")) as describer:
        describer.abort()
        assert opened["llm"].aborts == 1


def test_a_registration_is_undone_when_its_block_ends(tmp_path):
    real = vision.runtime_for("x.rknn")
    with vision.register(".RKNN", vision.pooled(lambda *a: []), npu=False):
        assert vision.runtime_for("x.rknn").npu is False
    assert vision.runtime_for("x.rknn") is real
    with llm.register(".only-here", lambda *a: None):
        assert llm.runtime_for("m.only-here")
    with pytest.raises(ModelFileError, match=r"model\.llm must be a \.rkllm"):
        llm.runtime_for("m.only-here")
    with pytest.raises(ValueError, match="starts with a dot"):
        vision.register("onnx", vision.pooled(lambda *a: []))


def test_importing_the_stages_loads_no_runtime():
    modules = ["onnxruntime", "llama_cpp", "rknnlite", "rkvideo.vision.onnxrt", "rkvideo.vision.rknn",
               "rkvideo.llm.llamacpp", "rkvideo.llm.rkllm"]
    code = (f"import sys, rkvideo.pipeline, rkvideo.vision, rkvideo.llm; "
            f"print([m for m in {modules!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_errors_are_kinds_of_error():
    from rkvideo import budget, errors, media, models
    for usage in (media.MediaError, budget.BudgetError, assemble.ShapeError, pipeline.SetupError,
                  models.UnknownProfile):
        assert issubclass(usage, errors.UsageError), usage
    assert issubclass(models.UnknownProfile, KeyError)
    for failure in (vision.VisionError, llm.LLMError):
        assert issubclass(failure, errors.RuntimeFailure), failure
    stopped = llm.Interrupted(llm.Generation("partial", 1, 1, {}, "abort"))
    assert isinstance(stopped, errors.Interrupted) and stopped.generation.text == "partial"
    assert str(stopped) == "generation interrupted"
