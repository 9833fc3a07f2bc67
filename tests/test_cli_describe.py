"""`rkvideo describe` end to end through --dry-run: real clips, real decoding, no models."""
import json
import subprocess
import sys

import pytest

import footage
from rkvideo import cli


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    """An isolated config so no user or repo config leaks in."""
    path = tmp_path / "config.toml"
    path.write_text("")
    monkeypatch.setenv("RKVIDEO_CONFIG", str(path))
    return path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def results(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_dry_run_json_plans_frames_inside_their_segments(cfg, capsys):
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, out, err = run(capsys, "describe", str(path), "--frames", "4", "--dry-run", "--json")
    assert code == 0, err
    [res] = results(out)
    assert res["kind"] == "video" and res["inputs"] == [str(path)] and res["text"] is None
    assert [f["index"] for f in res["frames"]] == [0, 1, 2, 3]
    for i, f in enumerate(res["frames"]):
        assert i * 1.0 <= f["seconds"] < (i + 1) * 1.0        # segment i of 4 one-second segments
    assert res["frames_capped_by_budget"] is False
    # vision = image tokens + tags (196 + 2 for Qwen2-VL); the timestamp text counts as prompt.
    assert res["tokens"]["vision"] == 4 * (196 + 2)
    assert res["tokens"]["prompt"] + res["tokens"]["vision"] == res["plan"]["prompt_tokens"] + \
        res["plan"]["vision_tokens"]
    assert set(res["timings"]) >= {"decode", "preprocess"}
    assert res["model"]["profile"] == "qwen2-vl-2b"


def test_frames_above_budget_are_capped_with_a_warning(cfg, capsys):
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, out, err = run(capsys, "describe", str(path), "--frames", "30", "--max-new-tokens", "2048",
                         "--dry-run", "--json")
    assert code == 0
    [res] = results(out)
    assert res["frames_capped_by_budget"] is True
    assert len(res["frames"]) == res["plan"]["max_frames"] < 30
    assert "warning" in err and "30 frames requested" in err


def test_images_form_one_request_or_each(cfg, capsys):
    a = footage.image("a.jpg", size=(64, 48))
    b = footage.image("b.png", size=(48, 64))
    code, out, _ = run(capsys, "describe", str(a), str(b), "--dry-run", "--json")
    assert code == 0
    [res] = results(out)
    assert res["kind"] == "images" and len(res["frames"]) == 2
    assert res["prompt"] == "Describe these images."
    code, out, _ = run(capsys, "describe", str(a), str(b), "--each", "--dry-run", "--json")
    assert [len(r["frames"]) for r in results(out)] == [1, 1]


def test_human_plan_lists_timestamps(cfg, capsys):
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, out, _ = run(capsys, "describe", str(path), "--frames", "2", "--dry-run")
    assert code == 0
    assert "2 frames" in out and "frame   0" in out and "tokens:" in out


def test_bad_video_is_a_one_line_usage_error_and_others_continue(cfg, capsys, tmp_path):
    bad = footage.write_bytes(tmp_path / "noise.mp4", b"\x00garbage" * 100)
    good = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, out, err = run(capsys, "describe", str(bad), str(good), "--frames", "2", "--dry-run", "--json")
    assert code == 2
    assert len(results(out)) == 1                     # the good clip is still described
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and str(bad) in lines[0]


def test_unknown_suffix_and_bad_numbers_are_usage_errors(cfg, capsys, tmp_path):
    assert run(capsys, "describe", str(tmp_path / "notes.txt"), "--dry-run")[0] == 2
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, _, err = run(capsys, "describe", str(path), "--frames", "0", "--dry-run")
    assert code == 2 and "--frames" in err


def test_budget_below_one_frame_says_what_to_lower(cfg, capsys):
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, _, err = run(capsys, "describe", str(path), "--max-new-tokens", "4090", "--dry-run")
    assert code == 2 and "max_new_tokens" in err


def test_missing_model_file_names_file_and_key(cfg, capsys, tmp_path):
    cfg.write_text('[model]\nvision = "enc.onnx"\nllm = "llm.gguf"\n')
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, _, err = run(capsys, "describe", str(path))
    assert code == 2
    assert "enc.onnx" in err and "model.vision" in err
    cfg.write_text("")
    code, _, err = run(capsys, "describe", str(path))
    assert code == 2 and "model.vision is not set" in err


def test_bad_config_is_a_usage_error(cfg, capsys):
    cfg.write_text("[model]\nprofile = 3\n")
    code, _, err = run(capsys, "describe", "x.mp4", "--dry-run")
    assert code == 2 and "model.profile must be a string" in err and str(cfg) in err


def test_console_script_runs_in_a_real_process(cfg):
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    proc = subprocess.run([sys.executable, "-m", "rkvideo.cli", "describe", str(path), "--frames", "3",
                           "--dry-run", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["frames"]) == 3


def test_ctrl_c_stops_the_whole_command(cfg, capsys, monkeypatch):
    from rkvideo import pipeline
    calls = []

    def interrupted(self, inputs, **kw):
        calls.append(inputs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Describer, "describe", interrupted)
    a = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, _, err = run(capsys, "describe", str(a), str(a), "--dry-run")
    assert code == 130 and len(calls) == 1          # the second input never starts
    assert "interrupted" in err


def test_unknown_profile_names_the_key_and_the_file(cfg, capsys):
    cfg.write_text('[model]\nprofile = "llava-7b"\n')
    code, _, err = run(capsys, "describe", "x.mp4", "--dry-run")
    assert code == 2 and "model.profile" in err and str(cfg) in err and "qwen2-vl-2b" in err
