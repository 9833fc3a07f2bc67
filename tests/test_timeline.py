"""Timeline mode through the real Describer, activity analysis, sampling and vision pool, with an LLM
double that records every request: one request per segment with frames where the activity is, one
summary without images that fits (in groups when it must), no request at all for a quiet recording,
resuming from kept moments, stopping, and the fallback to one caption."""
from __future__ import annotations

import pytest

from camera import Crossing, Scene
from doubles.encoders import ScriptedEncoder
from rkvideo import activity, assemble, config as config_mod, errors, llm, pipeline, timeline, vision

SMALL = dict(seconds=60, fps=10, size=(160, 96))
CROSSINGS = (Crossing(5, 10), Crossing(20.3, 21.7, size=0.1), Crossing(40, 48, size=0.5))


class RecordingLLM:
    """Answers every request with a caption naming a bicycle and its frame times, and records it."""

    path = "recording.llm-double"
    placeholder_rule = assemble.PER_IMAGE

    def __init__(self, profile, words: int = 8):
        self.input_width = profile.encoder_width
        self.words = words
        self.images: list = []       # assemble.Request per request with images
        self.texts: list = []        # assemble.TextRequest per request without

    def generate(self, request, on_text=None) -> llm.Generation:
        self.images.append(request)
        text = " ".join(["A bicycle passes at"] + [f"{s:.1f}s" for s in request.stamps] + ["ok"] * self.words)
        # One token per word: what a tokenizer would give for words this short.
        return llm.Generation(text, request.prompt_tokens + request.vision_tokens, len(text.split()),
                              {"generate": 0.001})

    def generate_text(self, request, on_text=None) -> llm.Generation:
        self.texts.append(request)
        return llm.Generation(f"Summary {len(self.texts)}.", request.prompt_tokens, 3, {"generate": 0.001})

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def runtimes():
    made: dict = {"words": 8}

    def open_llm(path, config, profile, npu_vision):
        made["llm"] = RecordingLLM(profile, made["words"])
        return made["llm"]

    with vision.register(".tl-vision", vision.pooled(lambda p, prof, w: [ScriptedEncoder(p) for _ in range(w)])), \
            llm.register(".tl-llm", open_llm):
        yield made


def make_config(tmp_path, **timeline_settings) -> config_mod.Config:
    cfg = config_mod.Config()
    for name in ("enc.tl-vision", "model.tl-llm"):
        (tmp_path / name).write_text("a test double's model\n")
    cfg.model.vision, cfg.model.llm = str(tmp_path / "enc.tl-vision"), str(tmp_path / "model.tl-llm")
    cfg.model.input_size, cfg.model.tokens_per_image, cfg.model.embed_width = 32, 4, 3   # ScriptedEncoder's
    cfg.vision.workers = 1
    cfg.describe.frames = 6
    cfg.llm.max_new_tokens = 64
    for key, value in timeline_settings.items():
        setattr(cfg.timeline, key, value)
    return cfg


def describe(cfg, path, options=None, hooks=None, kept=()):
    with pipeline.Describer(cfg) as describer:
        return timeline.describe(describer, path, options or timeline.Options(mode="timeline"), hooks, kept)


def test_a_quiet_recording_costs_no_request_and_says_so(runtimes, scenes, tmp_path):
    path = scenes("static.mp4", Scene(**SMALL))
    result = describe(make_config(tmp_path), path)
    recorder = runtimes["llm"]
    assert recorder.images == [] and recorder.texts == []
    assert result.events == [] and result.frames == [] and result.tokens.new == 0
    assert result.text.startswith("No activity over the whole recording (01:00): ")
    assert "keyframes decoded" in result.text and "peak activity" in result.text
    assert result.plan["mode"] == "timeline" and result.plan["activity"]["spans"] == []


def test_each_segment_is_one_request_with_frames_where_the_activity_is(runtimes, scenes, tmp_path):
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    result = describe(make_config(tmp_path), path)
    recorder = runtimes["llm"]
    segments = result.plan["segments"]
    assert len(segments) == len(result.events) == len(recorder.images) >= 2
    assert len(recorder.images) + len(recorder.texts) <= len(segments) + 1
    for (start, end), event, request in zip(segments, result.events, recorder.images):
        stamps = list(request.stamps)
        assert (event.start, event.end) == (start, end)
        assert 1 <= request.n_images <= result.plan["max_frames"]          # the budget holds
        assert stamps[0] == pytest.approx(start, abs=0.11)                 # its first moment, always
        assert all(start <= s < end for s in stamps)
        assert all(b - a >= 0.9 for a, b in zip(stamps, stamps[1:]))      # min_frame_gap 1 s (±1 frame)
        assert [f["seconds"] for f in event.frames] == pytest.approx(stamps, abs=1e-3)
        # The frames' times are the recording's, and the prompt says which part this is.
        assert f"from {activity.clock(start)} to {activity.clock(end)} of a 01:00 recording" in \
            request.user_text()
        assert event.text.startswith("A bicycle passes at")
    # The frames sit on the true moments (the first of each request is its padded start).
    for event in result.events:
        rest = [f["seconds"] for f in event.frames[1:]]
        assert all(any(c.start - 0.5 <= t < c.end + 0.5 for c in CROSSINGS) for t in rest), rest


def test_the_summary_is_one_request_without_images_that_fits(runtimes, scenes, tmp_path):
    cfg = make_config(tmp_path)
    result = describe(cfg, scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL)))
    [summary] = runtimes["llm"].texts
    assert isinstance(summary, assemble.TextRequest) and summary.n_images == 0
    assert summary.prompt_tokens + summary.max_new_tokens + cfg.llm.reserve < summary.max_context
    for event in result.events:
        assert f"{activity.clock(event.start)}–{activity.clock(event.end)}: {event.text}" in summary.text
    assert summary.text.endswith(cfg.timeline.summary_prompt)
    assert result.text == "Summary 1."
    assert result.tokens.new == sum(len(e.text.split()) for e in result.events) + 3
    assert "analysis" in result.timings and "summary" in result.timings


def test_captions_that_do_not_fit_one_context_are_summarised_in_groups_first(runtimes, scenes, tmp_path):
    runtimes["words"] = 200             # long captions …
    cfg = make_config(tmp_path, segment_gap=0.0, merge_gap=0.0)
    cfg.model.max_context = 700         # … and a small context: three do not fit one request
    result = describe(cfg, scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL)))
    texts = runtimes["llm"].texts
    assert len(result.events) >= 3 and len(texts) >= 2
    for request in texts:
        assert request.n_images == 0
        assert request.prompt_tokens + request.max_new_tokens + cfg.llm.reserve < request.max_context
    assert "Summary" in texts[-1].text and result.text == f"Summary {len(texts)}."
    assert any("rounds" in note for note in result.notes)


def test_moments_kept_by_an_interrupted_run_are_not_described_again(runtimes, scenes, tmp_path):
    cfg = make_config(tmp_path)
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    told = []
    first = describe(cfg, path, hooks=timeline.Hooks(on_event=told.append))
    assert told == first.events
    kept = [first.events[0].as_json()]
    again = describe(cfg, path, kept=kept)
    assert len(runtimes["llm"].images) == len(first.events) - 1
    assert again.events[0].text == first.events[0].text and again.events[0].frames == first.events[0].frames


def test_a_stop_ends_the_timeline_between_moments(runtimes, scenes, tmp_path):
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    told = []
    hooks = timeline.Hooks(on_event=told.append, stopped=lambda: bool(told))
    with pytest.raises(errors.Interrupted):
        describe(make_config(tmp_path), path, hooks=hooks)
    assert len(runtimes["llm"].images) == 1 and runtimes["llm"].texts == []


def test_auto_mode_chooses_by_the_recording_length(runtimes, scenes, tmp_path):
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    auto = timeline.Options(mode="auto")
    assert describe(make_config(tmp_path, min_duration=30.0), path, auto).plan["mode"] == "timeline"
    clip = describe(make_config(tmp_path, min_duration=120.0), path, auto)
    assert "mode" not in clip.plan and clip.events == [] and len(runtimes["llm"].images) == 1


def test_a_failed_analysis_falls_back_to_one_caption_with_a_note(runtimes, scenes, tmp_path, monkeypatch):
    def fails(path, settings=None, on_progress=None):
        raise activity.AnalysisError(f"{path}: no video packets could be read for the activity analysis")
    monkeypatch.setattr(activity, "analyse", fails)
    result = describe(make_config(tmp_path), scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL)))
    assert result.events == [] and len(runtimes["llm"].images) == 1 and result.text.startswith("A bicycle")
    assert any("described as one clip" in note for note in result.notes)


def test_a_dry_run_plans_the_moments_without_models(scenes):
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    with pipeline.Describer(config_mod.Config(), dry_run=True) as describer:
        result = timeline.describe(describer, path, timeline.Options(mode="timeline"))
    assert result.text is None and len(result.events) >= 2
    assert all(e.frames and e.text == "" for e in result.events)


def test_clip_frames_by_activity_go_where_things_happen(runtimes, scenes, tmp_path):
    action = (Crossing(12, 17, size=0.3),)
    path = scenes("action.mp4", Scene(crossings=action, seconds=30, fps=10, size=(160, 96)))
    cfg = make_config(tmp_path)
    with pipeline.Describer(cfg) as describer:
        picked = describer.describe_video(path, frames=6, frames_by="activity")
        uniform = describer.describe_video(path, frames=6)
    seconds = [f["seconds"] for f in picked.frames]
    assert seconds[0] == 0.0                                    # the first frame is kept
    assert all(11.0 <= s < 18.0 for s in seconds[1:]) and len(seconds) >= 4
    assert sum(12 <= f["seconds"] < 17 for f in uniform.frames) <= 1


# ----------------------------------------------------------------------------- the command line

def test_describe_timeline_prints_the_moments_and_writes_stores_and_finds_them(scenes, tmp_path):
    """`rkvideo describe long.mp4 --timeline` end to end with the test-double runtimes in a real
    process: the timeline and summary on stdout, one VTT cue per moment, the txt lists them, the
    database keeps them, `search` finds a moment with its times and `show` prints the timeline."""
    import json
    import re
    import shutil

    from doubles import daemon
    clip = tmp_path / "driveway.mp4"
    shutil.copyfile(scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL)), clip)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rk.db"
    run = daemon.rkvideo("describe", clip, "--timeline", "--sidecars", "txt,vtt", "--db", db, "--config", config)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    moments = [line for line in lines if re.match(r"\d\d:\d\d–\d\d:\d\d  The recording driveway shows", line)]
    assert len(moments) >= 2 and lines[:len(moments)] == moments
    assert lines[-1].startswith(f"Summary: {len(moments)} moments, the first at ")
    assert re.search(r"\[\d+ prompt \+ \d+ new tokens; analysis", run.stderr)

    cues = re.findall(r"(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n(.+)",
                      (tmp_path / "driveway.mp4.vtt").read_text())
    assert [text for _, _, text in cues] == [m.split("  ", 1)[1] for m in moments]
    txt = (tmp_path / "driveway.mp4.txt").read_text()
    assert txt.startswith("Summary: ") and txt.rstrip("\n").endswith(moments[-1])

    found = daemon.rkvideo("search", "driveway", "--db", db)
    assert found.returncode == 0, found.stderr
    hits = [line for line in found.stdout.splitlines() if line.startswith(str(clip))]
    assert len(hits) == len(moments)
    assert all(re.match(re.escape(str(clip)) + r" \d\d:\d\d–\d\d:\d\d  .*\[driveway\]", h) for h in hits)
    as_json = json.loads(daemon.rkvideo("search", "driveway", "--json", "--db", db).stdout)
    assert {h["kind"] for h in as_json} == {"moment"} and all(h["start"] < h["end"] for h in as_json)

    shown = daemon.rkvideo("show", clip, "--db", db)
    assert f"timeline ({len(moments)} moments):" in shown.stdout
    assert all(f"  {m}" in shown.stdout for m in moments)
    data = json.loads(daemon.rkvideo("show", clip, "--json", "--db", db).stdout)
    assert len(data["descriptions"][0]["events"]) == len(moments)

    result = json.loads(daemon.rkvideo("describe", clip, "--timeline", "--json", "--config", config).stdout)
    assert result["text"].startswith("Summary") and len(result["events"]) == len(moments)
    assert set(result["events"][0]) == {"start", "end", "text", "frames", "score"}


def test_ctrl_c_during_a_timeline_stops_cleanly(scenes, tmp_path):
    import shutil
    import signal
    import subprocess

    from doubles import daemon
    clip = tmp_path / "porch.mp4"
    shutil.copyfile(scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL)), clip)
    config, log = daemon.write_config(tmp_path), tmp_path / "calls.log"
    env = daemon.environment(RKVIDEO_FAKE_GATE=tmp_path / "never", RKVIDEO_FAKE_LOG=log)
    proc = subprocess.Popen(daemon.command("describe", clip, "--timeline", "--config", config), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon.wait_for(lambda: log.exists() and "generate-start" in log.read_text(), proc, "the first moment's request")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    calls = log.read_text()
    assert calls.count("generate-start") == 1 and "summary-start" not in calls     # nothing after the stop
    assert out == ""


def test_a_timeline_dry_run_on_the_command_line_lists_the_moments(scenes, tmp_path, monkeypatch, capsys):
    from rkvideo import cli
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv("RKVIDEO_CONFIG", str(tmp_path / "config.toml"))
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    assert cli.main(["describe", str(path), "--timeline", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}: timeline, ") and "moment(s) to describe" in out[0]
    assert out[1].startswith("  activity: packets and keyframes, ")
    assert len(out) >= 4 and all(" score " in line and "frames at s: " in line for line in out[2:])


def test_progress_shows_the_analysis_then_each_moment(capsys):
    from rkvideo.cli.describe import Progress
    progress = Progress(True)
    progress.stage("yard.mp4", "analysis", 30.0, 120.0)
    progress.stage("yard.mp4", "segment", 2, 5)
    progress.stage("yard.mp4", "summary", 1, 1)
    progress.line("00:04–00:11  a cat")
    out, err = capsys.readouterr()
    assert "yard.mp4: looking for activity, 25%" in err and "yard.mp4: moment 2 of 5" in err
    assert "writing the summary" in err and out == "00:04–00:11  a cat\n"
    silent = Progress(False)
    silent.stage("yard.mp4", "segment", 1, 2)
    assert capsys.readouterr().err == ""


def test_thumbnails_line_up_with_the_frames_also_after_a_resume(runtimes, scenes, tmp_path):
    """For the web page: a small JPEG per frame the model saw, in the order of Result.frames; a moment
    kept by an interrupted run has its frames decoded again for them."""
    cfg = make_config(tmp_path)
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    options = timeline.Options(mode="timeline", thumbnails=True)
    first = describe(cfg, path, options)
    assert len(first.thumbnails) == len(first.frames) > 0
    assert all(jpeg.startswith(b"\xff\xd8") for jpeg in first.thumbnails)
    again = describe(cfg, path, options, kept=[first.events[0].as_json()])
    assert len(again.thumbnails) == len(again.frames) == len(first.frames)
    assert "thumbnails" not in again.as_json()
