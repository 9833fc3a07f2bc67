"""`describe` end to end with real runtimes: the self-test's tiny ONNX encoder through ONNX Runtime
and its tiny GGUF through llama.cpp, on real encoded clips and images. Random weights: the
tests check frames, tokens, timings, determinism and stops, never the words."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import footage
from rkvideo import cli, config as config_mod, llm as llm_mod, pipeline

STAGES = {"decode", "preprocess", "encode", "vision", "prefill", "generate"}


@pytest.fixture(scope="module")
def clips(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-media")
    return {
        "a": footage.make_clip(root / "a.mp4", seconds=3.0, fps=10, size=(192, 108)),
        "b": footage.make_clip(root / "b.mkv", seconds=2.0, fps=12, size=(120, 160)),
        "images": [footage.make_image(root / f"shot{k}.jpg", size=(160, 120), number=k) for k in range(3)],
    }


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_describe_a_video_through_the_cli(tiny_models, clips, capsys):
    code, [res], err = run(capsys, "describe", clips["a"], "--config", tiny_models.config, "--json")
    assert code == 0, err
    assert res["kind"] == "video" and res["inputs"] == [str(clips["a"])]
    assert [f["index"] for f in res["frames"]] == [0, 1, 2, 3]
    assert [f["seconds"] for f in res["frames"]] == sorted(f["seconds"] for f in res["frames"])
    assert isinstance(res["text"], str) and res["text"]
    # 4 frames × (16 vision rows + 2 tags) in the budget's accounting; the LLM's count is real tokens.
    assert res["tokens"]["vision"] == 4 * 18 and res["tokens"]["new"] == 16
    assert res["tokens"]["prompt"] > 4 * 16
    assert set(res["timings"]) >= STAGES
    assert res["model"] == {"profile": "qwen2-vl-2b", "vision": "encoder.onnx", "llm": "llm.gguf"}


def test_describe_an_image_set_as_one_request(tiny_models, clips, capsys):
    code, [res], err = run(capsys, "describe", *clips["images"], "--config", tiny_models.config, "--json")
    assert code == 0, err
    assert res["kind"] == "images" and len(res["frames"]) == 3
    assert [Path(f["source"]).name for f in res["frames"]] == ["shot0.jpg", "shot1.jpg", "shot2.jpg"]
    assert res["tokens"]["vision"] == 3 * 18 and res["text"]


def test_each_image_and_each_video_is_its_own_request(tiny_models, clips, capsys):
    code, results, err = run(capsys, "describe", clips["b"], *clips["images"][:2], "--each", "--frames", "2",
                             "--config", tiny_models.config, "--json")
    assert code == 0, err
    assert [(r["kind"], len(r["frames"])) for r in results] == [("video", 2), ("images", 1), ("images", 1)]


def test_the_command_line_streams_text_and_keeps_json_clean(tiny_models, clips):
    exe = Path(sys.executable).with_name("rkvideo")
    base = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from rkvideo.cli import main; "
                                                                  "sys.exit(main())"]
    args = ["describe", str(clips["a"]), "--config", str(tiny_models.config), "--frames", "3"]
    as_json = subprocess.run(base + args + ["--json"], capture_output=True, text=True, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    [line] = as_json.stdout.splitlines()  # nothing from llama.cpp or ONNX Runtime on stdout
    res = json.loads(line)
    plain = subprocess.run(base + args, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == res["text"] + "\n"  # streamed, then a newline; deterministic across processes
    assert f"{res['tokens']['prompt']} prompt + 16 new tokens" in plain.stderr


def test_a_second_clip_on_the_loaded_model_matches_a_fresh_model(tiny_models, clips):
    cfg = config_mod.load(tiny_models.config)
    with pipeline.Describer(cfg) as describer:
        first = describer.describe_video(clips["a"])
        other = describer.describe_video(clips["b"])
        again = describer.describe_video(clips["a"])
    with pipeline.Describer(cfg) as fresh:
        new = fresh.describe_video(clips["a"])
    assert first.text == again.text == new.text
    assert other.frames != first.frames


def test_abort_stops_generation_and_the_describer_stays_usable(tiny_models, clips):
    cfg = config_mod.load(tiny_models.config)
    pieces = []
    with pipeline.Describer(cfg) as describer:
        def on_text(piece):
            pieces.append(piece)
            describer.abort()

        with pytest.raises(llm_mod.Interrupted) as err:
            describer.describe_video(clips["a"], max_new_tokens=200, on_text=on_text)
        assert err.value.generation.stop == "abort" and err.value.generation.new_tokens == 1
        assert len(pieces) == 1
        after = describer.describe_video(clips["a"])
    assert after.tokens.new == 16


def test_sigterm_during_generation_exits_130(tiny_models, clips, capsys, monkeypatch):
    def echo_then_terminate(text):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler aborts the LLM and raises KeyboardInterrupt

    monkeypatch.setattr(cli.describe, "echo", echo_then_terminate)
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["describe", str(clips["a"]), "--config", str(tiny_models.config)])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err
    assert signal.getsignal(signal.SIGTERM) == before


def test_mismatched_encoder_and_llm_widths_name_both_files(tiny_models, tmp_path, capsys):
    from rkvideo import selftest
    selftest.build_gguf(tmp_path / "narrow.gguf", width=32, heads=2, kv_heads=1)
    config = tmp_path / "config.toml"
    text = tiny_models.config.read_text().replace('llm = "llm.gguf"', 'llm = "narrow.gguf"')
    config.write_text(text.replace('vision = "encoder.onnx"', f'vision = "{tiny_models.encoder}"'))
    code, _, err = run(capsys, "describe", tiny_models.clip, "--config", config, "--json")
    assert code == 2
    assert "encoder.onnx" in err and "narrow.gguf" in err and "width mismatch" in err


def test_an_encoder_that_does_not_fit_the_profile_names_the_key(tiny_models, tmp_path, capsys):
    config = tmp_path / "config.toml"
    text = tiny_models.config.read_text().replace("tokens_per_image = 16", "tokens_per_image = 25")
    config.write_text(text.replace('"encoder.onnx"', f'"{tiny_models.encoder}"')
                          .replace('"llm.gguf"', f'"{tiny_models.llm}"'))
    code, _, err = run(capsys, "describe", tiny_models.clip, "--config", config)
    assert code == 2            # the configuration is wrong: a usage error, not a runtime failure (issue 9)
    assert "encoder.onnx" in err and "model.tokens_per_image = 16" in err
    assert len(err.strip().splitlines()) == 1


def test_a_video_that_yields_no_frame_is_a_media_error(tiny_models, clips, monkeypatch):
    from rkvideo import media
    monkeypatch.setattr(media, "sample", lambda *a, **k: iter(()))
    with pipeline.Describer(config_mod.load(tiny_models.config)) as describer:
        with pytest.raises(media.MediaError, match="no frame could be decoded"):
            describer.describe_video(clips["a"])
