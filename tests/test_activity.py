"""The activity analysis on camera-like recordings with a known truth (tests/camera.py): what it must
find, what it must ignore (noise, drift, a lighting switch, rain), and the awkward files; then how
spans become segments and where a segment's frames go. Small pictures keep it fast."""
from __future__ import annotations

import av
import numpy as np
import pytest

import camera
from camera import Crossing, Scene
from rkvideo import activity, config, media

SMALL = dict(seconds=60, fps=10, size=(160, 96))
# A person (mid-size), a small object crossing strictly between two keyframes (20 and 22 s), a van.
CROSSINGS = (Crossing(5, 10), Crossing(20.3, 21.7, size=0.1), Crossing(40, 48, size=0.5))


def overlaps(span, truth) -> bool:
    return span.start < truth.end and truth.start < span.end


def check_found(analysis, crossings, slack=1.0):
    """Every true event overlaps a reported span; every span lies on a true event (within ``slack``)."""
    for c in crossings:
        assert any(overlaps(s, c) for s in analysis.spans), (c, analysis.spans)
    for s in analysis.spans:
        assert any(s.start < c.end + slack and c.start - slack < s.end for c in crossings), (s, crossings)


def analyse(path, **settings):
    cfg = config.TimelineConfig()
    for key, value in settings.items():
        setattr(cfg, key, value)
    return activity.analyse(path, cfg)


def test_events_small_and_large_are_found_and_nothing_else(scenes):
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    analysis = analyse(path)
    check_found(analysis, CROSSINGS)
    assert analysis.method == "packets and keyframes" and analysis.duration == pytest.approx(60, abs=0.2)
    # One pass without decoding everything: far fewer pictures than keyframes in quiet stretches.
    assert analysis.frames == 600 and analysis.keyframes == 30 and analysis.thumbnails < analysis.keyframes


def test_an_event_between_two_keyframes_is_seen_from_the_packet_sizes(scenes):
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    short = CROSSINGS[1]
    found = [s for s in analyse(path).spans if overlaps(s, short)]
    assert found and found[0].length <= 4.0       # precise: not a keyframe interval around it


def test_a_persistent_brightness_switch_alone_is_no_event(scenes):
    path = scenes("switch.mp4", Scene(switch_at=30.3, **SMALL))
    analysis = analyse(path)
    assert analysis.spans == []
    # Recalibrated, not activity; placed between the keyframes that bracket it.
    assert len(analysis.switches) == 1 and 24 <= analysis.switches[0] <= 38


def test_events_around_a_brightness_switch_are_still_found(scenes):
    path = scenes("switch-events.mp4", Scene(crossings=CROSSINGS, switch_at=30.3, **SMALL))
    check_found(analyse(path), CROSSINGS)


def test_a_static_scene_with_noise_and_drift_has_no_events(scenes):
    path = scenes("static.mp4", Scene(drift=0.08, drift_period=120.0, **SMALL))
    assert analyse(path).spans == []


def test_rain_like_flicker_is_no_event_and_a_crossing_after_it_is_found(scenes):
    crossing = (Crossing(45, 50),)
    path = scenes("rain.mp4", Scene(flicker=(10, 40), crossings=crossing, **SMALL))
    analysis = analyse(path)
    check_found(analysis, crossing)


def test_long_gop_b_frames_and_variable_frame_rate(scenes):
    for name, extra in (("gop12.mp4", dict(gop=12.0)), ("bframes.mp4", dict(bframes=3)),
                        ("vfr.mp4", dict(vfr=True))):
        path = scenes(name, Scene(crossings=CROSSINGS, **SMALL, **extra))
        check_found(analyse(path), CROSSINGS, slack=2.0)


def test_all_intra_mjpeg_is_sampled_a_few_frames_per_second(scenes):
    path = scenes("cam.avi", Scene(crossings=CROSSINGS, codec="mjpeg", **SMALL))
    analysis = analyse(path, intra_fps=2.0)
    assert analysis.method == "intra frames"
    assert analysis.thumbnails == pytest.approx(2 * 60, abs=3)
    check_found(analysis, CROSSINGS)


def test_a_constant_bitrate_stream_is_covered_by_the_keyframes(scenes):
    cbr = {"x264-params": "nal-hrd=cbr:bitrate=60:vbv-maxrate=60:vbv-bufsize=30"}
    long_ones = (CROSSINGS[0], CROSSINGS[2])        # the ones a keyframe sees
    path = scenes("cbr.mp4", Scene(crossings=long_ones, options=cbr, **SMALL))
    check_found(analyse(path), long_ones, slack=2.0)


def test_a_recording_without_index_and_a_cut_off_one(scenes, tmp_path):
    source = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    live = tmp_path / "live.mkv"        # no cues, no duration: a recording that was never finalised
    with av.open(str(source)) as src, av.open(str(live), "w", options={"live": "1"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    check_found(analyse(live), CROSSINGS)
    cut = tmp_path / "cut.mkv"
    data = live.read_bytes()
    cut.write_bytes(data[:len(data) * 6 // 10])
    analysis = analyse(cut)
    assert 25 < analysis.duration < 45
    check_found(analysis, CROSSINGS[:2])


def test_a_cut_off_file_with_a_header_says_so(tmp_path):
    path = camera.make(tmp_path / "cam.mkv", Scene(crossings=CROSSINGS[:1], seconds=20, fps=10, size=(160, 96)))
    data = path.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[:len(data) // 2])
    analysis = analyse(tmp_path / "cut.mkv")
    assert analysis.duration < 15 and any("header" in n or "stopped" in n for n in analysis.notes)


def test_a_file_that_is_no_video_fails_with_one_line(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(media.MediaError, match="bad.mp4"):
        activity.analyse(bad)


def test_thresholds_and_lengths_come_from_the_config(scenes):
    path = scenes("cam.mp4", Scene(crossings=CROSSINGS, **SMALL))
    assert analyse(path, start=1000.0, end=500.0, min_area=0.9).spans == []     # nothing reaches them
    merged = analyse(path, merge_gap=40.0).spans
    assert len(merged) == 1 and merged[0].start < 6 and merged[0].end > 47
    assert all(s.length >= 3.0 for s in analyse(path, min_event=3.0).spans)


# ----------------------------------------------------------------------------- segments and frames

def made(spans, duration=600.0, step=0.5, scores=None) -> activity.Analysis:
    """An Analysis with these spans (scores 2 inside them unless given)."""
    bins = int(duration / step)
    if scores is None:
        scores = np.zeros(bins)
        for a, b in spans:
            scores[int(a / step):int(b / step)] = 2.0
    return activity.Analysis(duration=duration, step=step, scores=scores,
                             spans=[activity.Span(a, b, 2.0) for a, b in spans], method="test",
                             frames=0, keyframes=0, thumbnails=0)


def test_segments_are_padded_joined_when_near_and_split_when_long():
    cfg = config.TimelineConfig()        # pad 1, segment_gap 10, max_segment 60
    analysis = made([(0.5, 3.0), (8.0, 12.0), (100.0, 230.0), (590.0, 599.5)])
    got = [(s.start, s.end) for s in activity.segments(analysis, cfg)]
    assert got[0] == (0.0, 13.0)                                  # padded (clamped at 0) and joined
    long = got[1:4]                                               # 99–231: 132 s in three equal parts
    assert long[0][0] == 99.0 and long[-1][1] == 231.0
    assert all(b - a <= cfg.max_segment for a, b in long)
    assert [round(b - a, 2) for a, b in long] == [44.0] * 3
    assert got[4] == (589.0, 600.0)                               # clamped at the end


def test_frames_start_at_the_first_moment_follow_the_activity_and_keep_their_distance():
    scores = np.zeros(200)
    scores[40:60] = 1.5          # 20–30 s: something
    scores[70:80] = 30.0         # 35–40 s: much more (capped, so it cannot take every frame)
    analysis = made([(20.0, 30.0), (35.0, 40.0)], duration=100.0, scores=scores)
    segment = activity.Span(19.0, 41.0)
    times = activity.pick_times(analysis, segment, 8, min_gap=1.0)
    assert times[0] == 19.0 and times == sorted(times) and len(times) == 8
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[1:]))
    assert all(19.0 <= t < 41.0 for t in times)
    assert all(20.0 <= t < 30.0 or 35.0 <= t < 40.0 for t in times[1:])      # only where things happen
    assert sum(35.0 <= t < 40.0 for t in times) >= 2 and sum(20.0 <= t < 30.0 for t in times) >= 2


def test_no_activity_in_a_segment_gives_even_frames():
    analysis = made([], duration=60.0)
    times = activity.pick_times(analysis, activity.Span(10.0, 20.0), 3, min_gap=1.0)
    assert times == [10.0, 12.5, 17.5]


@pytest.mark.parametrize("seconds, text", [(0, "00:00"), (75.4, "01:15"), (3599.6, "1:00:00"), (4000, "1:06:40")])
def test_clock(seconds, text):
    assert activity.clock(seconds) == text


def test_the_same_file_always_gives_the_same_analysis(scenes):
    """A resumed timeline finds its segments again only if the analysis does not depend on timing
    (keyframes are decoded on a helper thread while the pass reads on)."""
    path = scenes("switch-events.mp4", Scene(crossings=CROSSINGS, switch_at=30.3, **SMALL))
    first, second = analyse(path), analyse(path)
    assert first.spans == second.spans and first.switches == second.switches
    assert np.array_equal(first.scores, second.scores) and first.thumbnails == second.thumbnails
