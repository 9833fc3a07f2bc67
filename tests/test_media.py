"""rkvideo.media on real encoded files (made by tests/footage.py with PyAV).

The ground truth for every clip is a full decode (footage.frame_table); the
sampler's answers are checked against the sampling rules, and each returned
picture's drawn frame number is checked against its timestamp, so a frame
that is merely labelled right cannot pass.
"""
from __future__ import annotations

import os
import stat

import av
import numpy as np
import pytest

import footage
from rkvideo import media
from rkvideo.media import MediaError

EPS = 1e-9

# name -> make_clip arguments. Small pictures, few frames: fast to make and decode.
CLIPS = {
    "h264.mp4": dict(seconds=4, fps=25, gop=25),                  # keyframe every second
    "h264-bframes.mov": dict(seconds=3, fps=10, gop=12, bframes=2),
    "vp9.mkv": dict(codec="vp9", seconds=3, fps=10, gop=10),
    "mjpeg.avi": dict(codec="mjpeg", seconds=2, fps=10),        # every frame a keyframe
    "hevc.mp4": dict(codec="hevc", seconds=3, fps=10, gop=10),
    "h264.ts": dict(seconds=6, fps=10, gop=30),                   # seeks land late
    "live.mkv": dict(seconds=4, fps=10, gop=10, muxer_options={"live": "1"}),  # no cues, no duration
    "start5.mp4": dict(seconds=2, fps=10, gop=5, start_pts=5.0),
    "start5.mkv": dict(seconds=2, fps=10, gop=5, start_pts=5.0),
    "vfr.mp4": dict(seconds=2, fps=20, gop=10, vfr=True),
    "sound.mp4": dict(seconds=2, fps=10, gop=10, audio=True),
}


def needs_encoder(name: str):
    codec = CLIPS[name].get("codec", "h264")
    return pytest.mark.skipif(not footage.has_encoder(codec),
                              reason=f"this PyAV build has no {footage.ENCODERS[codec]} encoder to make the clip")


def clip_param(name):
    return pytest.param(name, marks=needs_encoder(name), id=name)


ALL = [clip_param(name) for name in CLIPS]


def get(name):
    return footage.clip(name, **CLIPS[name])


class Truth:
    """Every frame of a clip, from a full decode, in seconds from its first frame."""

    def __init__(self, path):
        table = footage.frame_table(path)
        first = table[0][1]
        self.pts = [p for p, _, _ in table]
        self.secs = [t - first for _, t, _ in table]
        self.keys = [k for _, _, k in table]

    def first_at_or_after(self, t):
        return next((i for i, s in enumerate(self.secs) if s >= t - EPS), len(self.secs) - 1)

    def in_range(self, lo, hi, keys_only=False):
        return [i for i, s in enumerate(self.secs) if lo - EPS <= s <= hi + EPS and (self.keys[i] or not keys_only)]


def segments(duration, n):
    """(low, target, high) of each segment, in seconds from the first frame."""
    width = duration / n
    return [(i * width, (i + 0.5) * width, (i + 1) * width) for i in range(n)]


def check_frames(frames, path, truth):
    """What holds in both modes: fields, order, distinct frames, true pictures."""
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.source == str(path) for f in frames)
    assert all(f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
    assert all(f.image.flags["C_CONTIGUOUS"] for f in frames)
    pts = [f.pts for f in frames]
    assert pts == sorted(set(pts)), "frames must be distinct and in time order"
    for f in frames:
        i = truth.pts.index(f.pts)
        assert f.seconds == pytest.approx(truth.secs[i], abs=1e-6)
        assert footage.frame_number(f.image) == i, "the picture is not the frame its timestamp names"
        assert footage.is_upright(f.image)


# ----------------------------------------------------------------- targets

def test_targets_are_segment_centres():
    assert media.targets(0.0, 8.0, 4) == [1.0, 3.0, 5.0, 7.0]
    assert media.targets(5.0, 2.0, 1) == [6.0]


# ------------------------------------------------------------------- probe

@pytest.mark.parametrize("name", ALL)
def test_probe(name):
    kw = CLIPS[name]
    info = media.probe(get(name))
    truth = Truth(get(name))
    assert info.start == pytest.approx(kw.get("start_pts", 0.0) + (0.2 if name.endswith(".ts") else 0.0), abs=1e-3)
    if kw.get("vfr"):
        # The file's own word: last frame plus one frame at the nominal rate.
        assert info.duration == pytest.approx(truth.secs[-1] + 1 / kw["fps"], abs=1e-3)
    else:
        assert info.duration == pytest.approx(kw["seconds"], abs=1e-3)
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert info.frame_count in (None, len(truth.pts))
    assert info.codec == {"h264": "h264", "hevc": "hevc", "vp9": "vp9", "mjpeg": "mjpeg"}[kw.get("codec", "h264")]
    assert info.fps > 0


def test_probe_counts_frames_without_duration_headers():
    """A live mkv has no duration and no cues: the packets tell."""
    path = get("live.mkv")
    with av.open(str(path)) as c:
        assert c.duration is None and c.streams.video[0].duration is None
    info = media.probe(path)
    assert info.duration == pytest.approx(4.0)
    assert info.frame_count == 40


# ------------------------------------------------------------ sampling rules

@pytest.mark.parametrize("n", [1, 5, 12])
@pytest.mark.parametrize("name", ALL)
def test_fast_mode_rules(name, n):
    path, truth = get(name), Truth(get(name))
    duration = media.probe(path).duration
    notes = []
    frames = list(media.sample(path, n, "fast", notes))
    check_frames(frames, path, truth)
    # A segment with no frame of its own (VFR gaps) is skipped, with a note.
    filled = [seg for seg in segments(duration, n) if truth.in_range(seg[0], seg[2] - 2 * EPS)]
    assert len(frames) == len(filled)
    assert (notes == []) == (len(filled) == n)
    for f, (low, t, high) in zip(frames, filled):
        assert low - EPS <= f.seconds < high - EPS, "frame outside its own segment"
        q = (high - low) / 4
        if truth.in_range(t - q, t + q, keys_only=True):
            assert truth.keys[truth.pts.index(f.pts)] and abs(f.seconds - t) <= q + EPS, \
                "a keyframe lies within a quarter segment: it should be taken"
        elif truth.in_range(t - q, t + q):
            assert abs(f.seconds - t) <= q + EPS


@pytest.mark.parametrize("n", [1, 5, 12])
@pytest.mark.parametrize("name", ALL)
def test_exact_mode_picks_first_frame_at_or_after_target(name, n):
    path, truth = get(name), Truth(get(name))
    duration = media.probe(path).duration
    frames = list(media.sample(path, n, "exact"))
    check_frames(frames, path, truth)
    expected = [truth.pts[truth.first_at_or_after(t)] for _, t, _ in segments(duration, n)]
    assert [f.pts for f in frames] == list(dict.fromkeys(expected))


def test_fast_takes_a_near_keyframe_without_decoding_further(spy):
    # 4 s at 25 fps, keyframes at 0, 1, 2, 3 s; N=3 puts a keyframe inside
    # every target's quarter-segment window (targets 0.67, 2.0, 3.33 s).
    path = get("h264.mp4")
    frames = list(media.sample(path, 3, "fast"))
    assert [round(f.seconds, 3) for f in frames] == [1.0, 2.0, 3.0]
    assert spy["frames"] == 3, "only the keyframes themselves should be decoded"


def test_fast_decodes_less_than_exact(spy):
    path = get("h264.mp4")
    list(media.sample(path, 5, "exact"))
    exact = spy["frames"]
    spy["frames"] = 0
    list(media.sample(path, 5, "fast"))
    assert spy["frames"] < exact


def test_targets_in_one_gop_keep_decoding_instead_of_seeking(spy):
    path = footage.clip("onegop.mp4", seconds=4, fps=25, gop=250)   # a single keyframe
    frames = list(media.sample(path, 8, "exact"))
    assert len(frames) == 8
    assert spy["seeks"] == 1
    assert spy["frames"] <= 100, "no frame should be decoded twice"


def test_mpegts_seek_lands_late_and_sampler_corrects_it():
    """The trap the sampler guards against: PyAV's seek on this TS file lands
    on the keyframe after the target; the sampler still gets the right frame."""
    path, truth = get("h264.ts"), Truth(get("h264.ts"))
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        target = s.start_time + int(2.5 / s.time_base)
        c.seek(target, stream=s, backward=True)
        landed = next(c.decode(s)).pts
    assert landed > target
    (frame,) = media.sample(path, 1, "exact")
    assert frame.pts == truth.pts[truth.first_at_or_after(3.0)]


def test_start_time_is_subtracted_from_seconds():
    for name in ("start5.mp4", "start5.mkv"):
        info = media.probe(get(name))
        assert info.start == pytest.approx(5.0) and info.duration == pytest.approx(2.0)
        frames = list(media.sample(get(name), 4, "exact"))
        assert [round(f.seconds, 3) for f in frames] == [0.3, 0.8, 1.3, 1.8]


def test_variable_frame_rate_uses_timestamps_not_frame_numbers():
    # 20 fps for the first second, 5 fps after: frame index and time disagree.
    path, truth = get("vfr.mp4"), Truth(get("vfr.mp4"))
    frames = list(media.sample(path, 4, "exact"))
    duration = media.probe(path).duration
    for f, (_, t, _) in zip(frames, segments(duration, 4)):
        assert f.seconds >= t - EPS
        assert footage.frame_number(f.image) == truth.first_at_or_after(t)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_recordings_come_out_upright(rotation):
    path = footage.clip(f"rot{rotation}.mp4", seconds=1, fps=10, rotation=rotation)
    info = media.probe(path)
    assert (info.width, info.height, info.rotation) == (160, 120, rotation)
    with av.open(str(path)) as c:     # stored sideways or upside down...
        stored = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert not footage.is_upright(stored)
    for mode in media.MODES:          # ...returned upright
        frames = list(media.sample(path, 3, mode))
        assert all(f.image.shape == (120, 160, 3) and footage.is_upright(f.image) for f in frames)


# ------------------------------------------------------------ short clips

@pytest.mark.parametrize("mode", media.MODES)
def test_short_clip_returns_every_frame_with_a_note(mode):
    path = footage.clip("three.mp4", seconds=0.3, fps=10)
    notes = []
    frames = list(media.sample(path, 8, mode, notes))
    assert [footage.frame_number(f.image) for f in frames] == [0, 1, 2]
    assert notes == ["only 3 frames in clip, 8 requested"]


def test_clip_with_exactly_n_frames_has_no_note():
    notes = []
    frames = list(media.sample(footage.clip("three.mp4", seconds=0.3, fps=10), 3, "fast", notes))
    assert len(frames) == 3 and notes == []


def test_single_frame_clip():
    path = footage.clip("one.mkv", seconds=0.1, fps=10)
    notes = []
    (frame,) = media.sample(path, 4, "exact", notes)
    assert frame.seconds == 0.0 and notes == ["only 1 frame in clip, 4 requested"]


# ------------------------------------------------------------- the API shape

def test_sample_is_lazy_and_can_stop_early():
    frames = media.sample(get("h264.mp4"), 5)
    first = next(frames)
    assert first.index == 0 and first.pts is not None
    frames.close()


def test_bad_arguments_raise_at_once():
    with pytest.raises(ValueError, match="mode"):
        media.sample(get("h264.mp4"), 3, "slow")
    with pytest.raises(ValueError, match="at least 1"):
        media.sample(get("h264.mp4"), 0)


def test_audio_track_is_ignored():
    frames = list(media.sample(get("sound.mp4"), 4))
    assert len(frames) == 4


# ---------------------------------------------------------- damaged files

def small_clip(tmp_path, name, **kw):
    return footage.make_clip(tmp_path / name, seconds=6, fps=10, gop=10, **kw)


def test_truncated_mp4_keeps_frames_before_the_cut(tmp_path):
    src = small_clip(tmp_path, "whole.mp4", faststart=True)   # index first, so the cut hits the frames
    path = footage.truncate(src, tmp_path / "cut.mp4", keep=0.75)
    notes = []
    frames = list(media.sample(path, 8, "exact", notes))
    # The frames are spread over what is left of the recording.
    assert frames and max(f.seconds for f in frames) < 5
    assert all(footage.frame_number(f.image) == round(f.seconds * 10) for f in frames)
    assert any("truncated" in n for n in notes), notes


@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_truncated_files_are_noted(tmp_path, suffix):
    src = small_clip(tmp_path, "whole" + suffix, **({"codec": "mjpeg"} if suffix == ".avi" else {}))
    path = footage.truncate(src, tmp_path / ("cut" + suffix), keep=0.6)
    notes = []
    frames = list(media.sample(path, 8, "fast", notes))
    assert frames and max(f.seconds for f in frames) < 5
    assert any("truncated" in n for n in notes), notes


def test_mp4_cut_before_its_index_is_a_media_error(tmp_path):
    src = small_clip(tmp_path, "whole.mp4")          # index (moov) written last
    path = footage.truncate(src, tmp_path / "cut.mp4", keep=0.5)
    with pytest.raises(MediaError, match="not a readable video"):
        list(media.sample(path, 4))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".ts", ".avi"])
def test_corrupt_bytes_do_not_hang_or_crash(tmp_path, suffix):
    kw = {"codec": "mjpeg"} if suffix == ".avi" else {}
    src = small_clip(tmp_path, "whole" + suffix, faststart=suffix == ".mp4", **kw)
    path = footage.corrupt(src, tmp_path / ("bad" + suffix), at=0.5, size=48)
    for mode in media.MODES:
        try:
            frames = list(media.sample(path, 8, mode))
        except MediaError as exc:
            assert str(path) in str(exc)
        else:
            assert len(frames) <= 8


def test_damaged_packets_are_skipped_and_decoding_goes_on(tmp_path):
    """Single-threaded decoders reject a damaged packet (frame-threaded ones
    drop it silently); either way the frames after it still come out."""
    src = small_clip(tmp_path, "whole.mp4", faststart=True)
    path = footage.corrupt(src, tmp_path / "bad.mp4", at=0.5, size=48)
    with av.open(str(path)) as container:        # PyAV's default: slice threads only
        stream = container.streams.video[0]
        cursor = media._Cursor(container, stream, media._timeline(container, stream, str(path)))
        cursor.seek(cursor.line.floor)
        times = []
        while (frame := cursor.take()) is not None:
            times.append(cursor.line.seconds(frame.pts))
    assert cursor.damaged > 0 and cursor.error is not None
    assert max(times) == pytest.approx(5.9)
    notes = media._notes(str(path), cursor.line, cursor, 8, 8, [])
    assert any("damaged packet" in n for n in notes), notes


# ------------------------------------------------------------ unusable files

def check_error(exc: MediaError, path, words: str):
    text = str(exc)
    assert "\n" not in text
    assert text.startswith(f"{path}: ") and text.endswith(")")
    assert words in text


def unusable(tmp_path):
    """name -> (path, words the message must contain)."""
    cases = {
        "missing": (tmp_path / "missing.mp4", "file not found"),
        "empty": (footage.write_bytes(tmp_path / "empty.mp4", b""), "file is empty"),
        "directory": (tmp_path / "folder.mp4", "is a directory"),
        "text": (footage.write_bytes(tmp_path / "notes.mp4", b"not a video at all\n" * 50), "not a readable video"),
        "audio only": (footage.make_clip(tmp_path / "voice.mp4", audio_only=True), "has audio but no video stream"),
        "fifo": (tmp_path / "pipe.mp4", "is not a regular file"),
    }
    (tmp_path / "folder.mp4").mkdir()
    os.mkfifo(tmp_path / "pipe.mp4")    # would block a demuxer forever
    return cases


@pytest.mark.parametrize("case", ["missing", "empty", "directory", "text", "audio only", "fifo"])
def test_unusable_files_raise_one_clear_line(tmp_path, case):
    path, words = unusable(tmp_path)[case]
    with pytest.raises(MediaError) as sampled:
        list(media.sample(path, 4))
    check_error(sampled.value, path, words)
    with pytest.raises(MediaError) as probed:
        media.probe(path)
    check_error(probed.value, path, words)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file, so permissions cannot be tested")
def test_unreadable_file(tmp_path):
    path = footage.make_clip(tmp_path / "locked.mp4", seconds=0.5)
    path.chmod(0)
    try:
        with pytest.raises(MediaError) as err:
            list(media.sample(path, 2))
        check_error(err.value, path, "permission denied")
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_file_the_user_may_not_read(tmp_path, monkeypatch):
    """The same check as above, run as any user: os.access says no."""
    path = footage.make_clip(tmp_path / "locked.mp4", seconds=0.5)
    monkeypatch.setattr(media.os, "access", lambda *a, **k: False)
    with pytest.raises(MediaError) as err:
        list(media.sample(path, 2))
    check_error(err.value, path, "permission denied")
    with pytest.raises(MediaError) as err:
        next(media.load_images([path]))
    check_error(err.value, path, "permission denied")


# ------------------------------------------------------------------ images

@pytest.mark.parametrize("orientation", [None, 1, 3, 6, 8, 2, 5])
def test_jpeg_exif_orientation_is_applied(orientation):
    path = footage.image(f"photo{orientation}.jpg", size=(160, 120), exif_orientation=orientation, number=5)
    (frame,) = media.load_images([path])
    assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
    assert footage.is_upright(frame.image)
    assert footage.frame_number(frame.image) == 5


def test_load_images_fields_and_rgb_order(tmp_path):
    jpg = footage.image("a.jpg", size=(160, 120), number=1)
    png = footage.image("b.png", size=(64, 48), number=2)
    frames = list(media.load_images([jpg, png]))
    assert [(f.index, f.pts, f.seconds, f.source) for f in frames] == [(0, None, 0.0, str(jpg)),
                                                                       (1, None, 0.0, str(png))]
    assert frames[1].image.shape == (48, 64, 3)
    red = frames[1].image[2, 2]
    assert red[0] > 200 and red[2] < 50, "expected RGB order (red top-left)"


def test_bad_images_raise_media_error(tmp_path):
    good = footage.image("good.png", size=(32, 24))
    broken = footage.write_bytes(tmp_path / "broken.jpg", b"\xff\xd8 not really a jpeg")
    frames = media.load_images([good, broken, tmp_path / "gone.png"])
    assert next(frames).index == 0              # lazy: the good one comes first
    with pytest.raises(MediaError) as err:
        next(frames)
    check_error(err.value, broken, "not a readable image")
    frames = media.load_images([tmp_path / "gone.png"])
    with pytest.raises(MediaError) as err:
        next(frames)
    check_error(err.value, tmp_path / "gone.png", "file not found")


# ------------------------------------------------------------ the samples

SAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "samples")


def sample_files(suffixes):
    if not os.path.isdir(SAMPLES):
        return []
    return sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.lower().endswith(suffixes))


@pytest.mark.parametrize("path", sample_files(media.VIDEO_SUFFIXES), ids=os.path.basename)
def test_sample_videos_decode(path):
    notes = []
    frames = list(media.sample(path, 4, "fast", notes))
    assert len(frames) == 4 and notes == []
    # phone.mov is stored landscape with a 90° display matrix: it shows portrait.
    shape = (320, 240, 3) if path.endswith("phone.mov") else (240, 320, 3)
    assert all(f.image.shape == shape for f in frames)


def test_sample_images_load():
    paths = sample_files(media.IMAGE_SUFFIXES)
    if not paths:
        pytest.skip("samples/ has no images; run samples/make_samples.py")
    images = {os.path.basename(f.source): f.image for f in media.load_images(paths)}
    house = images["house.jpg"]              # stored sideways, EXIF orientation 6
    assert house.shape == (240, 320, 3)
    sky, grass = house[5, 5].astype(int), house[-5, 5].astype(int)
    assert sky[2] > sky[0] and grass[1] > grass[0] and grass[1] > grass[2]


# ------------------------------------------------------------------ helpers

@pytest.fixture
def spy(monkeypatch):
    """Count the sampler's seeks and the frames its decoder hands out."""
    counts = {"seeks": 0, "frames": 0}
    seek, decode = media._Cursor.seek, media._Cursor._decode

    def counting_seek(self, ts):
        counts["seeks"] += 1
        return seek(self, ts)

    def counting_decode(self):
        for frame in decode(self):
            counts["frames"] += 1
            yield frame

    monkeypatch.setattr(media._Cursor, "seek", counting_seek)
    monkeypatch.setattr(media._Cursor, "_decode", counting_decode)
    return counts
