"""`rkvideo describe` end to end through --dry-run: real clips, real decoding, no models."""
import json
import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

import footage
from rkvideo import __version__, cli, media, pipeline
from doubles.fixtures import cfg  # noqa: F401 - a fixture
from rkvideo.output import sidecars


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
    proc = subprocess.run([sys.executable, "-m", "rkvideo", "describe", str(path), "--frames", "3",
                           "--dry-run", "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["frames"]) == 3


def test_ctrl_c_stops_the_whole_command(cfg, capsys, monkeypatch):
    from rkvideo import pipeline
    calls = []

    def interrupted(self, path, **kw):
        calls.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.Describer, "describe_video", interrupted)
    a = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    code, _, err = run(capsys, "describe", str(a), str(a), "--dry-run")
    assert code == 130 and len(calls) == 1          # the second input never starts
    assert "interrupted" in err


def test_unknown_profile_names_the_key_and_the_file(cfg, capsys):
    cfg.write_text('[model]\nprofile = "llava-7b"\n')
    code, _, err = run(capsys, "describe", "x.mp4", "--dry-run")
    assert code == 2 and "model.profile" in err and str(cfg) in err and "qwen2-vl-2b" in err


# ------------------------------------------------------------------ click seams

def test_click_runner_prints_the_same_json_as_main(cfg, capsys):
    path = footage.clip("cli4s", seconds=4.0, fps=10, gop=10)
    argv = ["describe", str(path), "--frames", "2", "--dry-run", "--json"]
    code, out, _ = run(capsys, *argv)
    result = CliRunner().invoke(cli.rkvideo, argv)
    assert code == result.exit_code == 0, result.output
    strip = lambda r: {k: v for k, v in r.items() if k != "timings"}       # noqa: E731 (seconds differ)
    assert [strip(r) for r in results(result.stdout)] == [strip(r) for r in results(out)]
    assert "\r" not in result.stderr                  # no progress lines when stderr is not a terminal


@pytest.mark.parametrize("argv", [["describe"], ["describe", "a.mp4", "--seek", "slow"],
                                  ["describe", "a.mp4", "--no-such-option"], ["no-such-command"]])
def test_click_usage_errors_exit_2(cfg, capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "Usage: rkvideo" in err
    assert CliRunner().invoke(cli.rkvideo, argv).exit_code == 2


def test_domain_errors_map_to_the_same_status_through_the_runner(cfg, tmp_path):
    result = CliRunner().invoke(cli.rkvideo, ["describe", str(tmp_path / "notes.txt"), "--dry-run"])
    assert result.exit_code == 2 and result.stderr.startswith("rkvideo: error:") and "notes.txt" in result.stderr


def test_version_help_and_no_command(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"rkvideo {__version__}"
    code, out, _ = run(capsys)
    assert code == 2 and "Usage: rkvideo" in out and "describe" in out and "Examples:" in out
    code, out, _ = run(capsys, "describe", "-h")
    assert code == 0 and "--sidecars" in out


def test_python_dash_m_rkvideo(cfg):
    proc = subprocess.run([sys.executable, "-m", "rkvideo", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"rkvideo {__version__}"


# ------------------------------------------------------------------ --sidecars

class CannedDescriber:
    """Stands in for pipeline.Describer: a fixed description, streamed in two pieces."""
    TEXT = "A red ball rolls across the floor."

    def __init__(self, config, *, dry_run=False, vision=None, llm=None):
        self.config, self.dry_run = config, dry_run

    def describe_video(self, path, *, frames=None, prompt=None, max_new_tokens=None, seek=None, frames_by=None,
                       on_text=None, on_frame=None, on_plan=None, thumbnails=False):
        if on_text:
            on_text(self.TEXT[:6])
            on_text(self.TEXT[6:])
        frames = [{"index": i, "pts": 1000 * i, "seconds": 0.5 + i, "source": str(path)} for i in range(2)]
        return pipeline.Result(inputs=[str(path)], kind=pipeline.Kind.VIDEO, frames=frames, prompt="Describe.",
                               model={"profile": "qwen2-vl-2b", "vision": None, "llm": None},
                               tokens=pipeline.Tokens(prompt=40, vision=396, new=9), frames_capped_by_budget=False,
                               timings=pipeline.Timings(decode=0.1, generate=0.2), text=self.TEXT)

    def abort(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_sidecars_are_the_files_the_daemon_writes(cfg, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "Describer", CannedDescriber)
    clip = footage.make_clip(tmp_path / "door.mp4", seconds=2.0, fps=10, size=(64, 48))
    code, out, err = run(capsys, "describe", str(clip), "--sidecars", "txt,json,vtt")
    assert code == 0, err
    assert out == CannedDescriber.TEXT + "\n"
    assert "[40 prompt + 9 new tokens; decode 0.10s, generate 0.20s]" in err
    # The daemon's writer, on the same result and the clip's duration, gives the same bytes.
    result = CannedDescriber(None).describe_video(str(clip))
    expected = sidecars.write_all(clip, result.as_json(), media.probe(str(clip)).duration, ["txt", "json", "vtt"],
                                  tmp_path / "daemon")
    for path in expected:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
    assert (tmp_path / "door.mp4.txt").read_text() == CannedDescriber.TEXT + "\n"
    assert json.loads((tmp_path / "door.mp4.json").read_text())["recording"] == str(clip)


def test_sidecars_go_under_output_dir_and_bad_kinds_are_usage_errors(cfg, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "Describer", CannedDescriber)
    cfg.write_text(f'[output]\ndir = "{tmp_path / "out"}"\n')
    clip = footage.make_clip(tmp_path / "yard.mp4", seconds=2.0, fps=10, size=(64, 48))
    code, _, err = run(capsys, "describe", str(clip), "--sidecars", "vtt", "--json")
    assert code == 0, err
    assert (tmp_path / "out" / "yard.mp4.vtt").read_text().startswith("WEBVTT")
    assert not (tmp_path / "yard.mp4.vtt").exists()
    code, _, err = run(capsys, "describe", str(clip), "--sidecars", "txt,srt")
    assert code == 2 and "unknown kind 'srt'" in err
    a, b = footage.image("a.jpg", size=(64, 48)), footage.image("b.png", size=(48, 64))
    code, _, err = run(capsys, "describe", str(a), str(b), "--sidecars", "txt")
    assert code == 2 and "--each" in err


def test_dry_runs_write_no_sidecars(cfg, capsys, tmp_path):
    clip = footage.make_clip(tmp_path / "gate.mp4", seconds=2.0, fps=10, size=(64, 48))
    code, _, err = run(capsys, "describe", str(clip), "--dry-run", "--sidecars", "txt")
    assert code == 0, err
    assert not (tmp_path / "gate.mp4.txt").exists()


def test_stage_warnings_reach_stderr_as_one_line_each(cfg, capsys, monkeypatch, tmp_path):
    """Stages log instead of printing; the command shows their warnings."""
    class Warns(CannedDescriber):
        def describe_video(self, path, **kw):
            logging.getLogger("rkvideo.vision.rknn").warning("%s: using %d encoder instances", "enc.rknn", 2)
            return super().describe_video(path, **kw)

    monkeypatch.setattr(pipeline, "Describer", Warns)
    clip = footage.make_clip(tmp_path / "hall.mp4", seconds=2.0, fps=10, size=(64, 48))
    code, _, err = run(capsys, "describe", str(clip), "--json")
    assert code == 0 and "rkvideo: warning: enc.rknn: using 2 encoder instances\n" in err
    assert not any(isinstance(h, cli.common.StderrHandler) for h in logging.getLogger("rkvideo").handlers)
