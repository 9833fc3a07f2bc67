"""Where something happens in a recording, found on the CPU in one cheap pass.

Why: on an RK3588 one request costs 15–35 s of NPU time, so a 10-minute camera
recording cannot be captioned window by window; the moments that matter must
be found first, for far less than decoding the recording (which is already
more work than the NPU budget allows on long files).

How, in one pass over the packets (``analyse``):

* **Compressed sizes (demux only).** A predicted frame is small when the
  picture stands still and grows when something moves. Sizes are divided by
  the typical size at the same place in the GOP (encoders give the first
  frames after a keyframe, and B- vs P-frames, very different sizes), then by
  the recording's own quiet level around that moment (a low percentile over
  ``baseline_window``), so thresholds are relative to the recording itself:
  sensor noise and a steady drizzle raise the baseline, not the score. A
  median per ``step`` ignores single odd frames (a flash, the first frame
  after a light switch). This signal has frame resolution, so a person who
  crosses between two keyframes is seen.
* **Keyframe thumbnails (keyframes only are decoded).** A small grey picture
  of a keyframe is compared with a running background, after matching
  brightness and contrast (lighting drift, auto exposure); a compact changed
  area is activity, scattered pixels (noise, rain) are removed by a
  morphological opening. This signal sees what sizes cannot (a constant
  bitrate stream, a slow walker) and vetoes what sizes get wrong (a long
  stretch of rain that contains keyframes where nothing changed).
* **Which keyframes.** Decoding a keyframe costs many predicted frames, so
  quiet stretches decode one every ``thumbnail_every`` seconds, while a GOP
  whose packets grew, a changed thumbnail or a flat (CBR) stream decode every
  keyframe — the keyframe that opened a busy GOP too (its packet is kept).
* **Whole-picture changes.** A change of nearly the whole picture that is
  still there at the next thumbnail (lights on, the IR switch at dusk) is not
  activity: the background is taken again, the baseline starts afresh there,
  and the short burst of large packets it caused is dropped.
* **All-intra streams** (MJPEG): sizes follow detail, not motion; instead
  ``intra_fps`` frames per second are decoded as thumbnails.

From the scores: an event starts at ``start`` and ends below ``end``
(hysteresis; 1.0 in ``Analysis.scores`` is the start threshold), events
shorter than ``min_event`` are dropped, gaps shorter than ``merge_gap`` are
joined; ``segments`` pads them, joins near ones and splits long ones into
request-sized pieces, and ``pick_times`` chooses frames inside a segment.

Cut-off files and read errors end the pass with a note (what was read is
analysed); a file with no usable packets raises ``AnalysisError``, which the
callers answer with a single caption.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import cv2
import numpy as np

from .config import TimelineConfig
from .media import MediaError, open_video

# Codecs whose every frame is a keyframe: their sizes say nothing about motion.
INTRA_CODECS = {"mjpeg", "jpeg2000", "prores", "dnxhd", "rawvideo", "png", "ffv1", "huffyuv", "utvideo"}
THUMB_WIDTH = 128            # pixels; a person at 30 m still covers a few of them
MIN_LEVEL = 10.0             # grey levels a thumbnail pixel must change by, whatever the noise
GLOBAL_AREA = 0.5            # changed fraction of the picture that makes a change "whole-picture"
GLOBAL_SHIFT = 12.0          # grey levels of brightness change that make it whole-picture too
ABSORB = 6.0                # seconds a change must stand still to become background (a parked car)
SETTLE = 3.0                 # seconds a camera takes to settle after a whole-picture change
RECENT_GOPS = 16             # GOPs the online "did this GOP grow?" check compares with
BUSY_RISE = 1.0              # a GOP whose median packet grew this much (doubled) decodes its keyframes
WEIGHT_CAP = 4.0             # frame picking: a score counts up to this much
EVIDENCE = 1.5               # score × seconds a weak stretch nothing confirms must hold
STRONG = 3.0                 # packet scores this high stand without a changed keyframe
FLAT = 0.03                  # GOP sizes varying less than this (MAD / median) look like CBR
# Pixel formats whose first plane is 8-bit luma, read as it is instead of converted.
LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p", "yuv440p",
              "nv12", "nv21", "nv16", "gray"}

Progress = Callable[[float, float | None], None]      # (seconds read, duration if known)


class AnalysisError(MediaError):
    """The activity of a recording cannot be analysed; the callers fall back to one caption."""


@dataclass(frozen=True)
class Span:
    """A stretch of the recording in seconds from its start, with its peak score (1.0 = the start level)."""
    start: float
    end: float
    score: float = 0.0

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass
class Analysis:
    """The outcome of ``analyse``: scores per ``step`` and the active spans (unpadded)."""
    duration: float
    step: float
    scores: np.ndarray               # activity per step, 1.0 = the start threshold
    spans: list                      # [Span], before padding
    method: str                      # "packets and keyframes" or "intra frames"
    frames: int                      # compressed frames read
    keyframes: int                   # keyframes seen
    thumbnails: int                  # pictures decoded
    switches: list = field(default_factory=list)    # seconds of whole-picture changes (recalibrations)
    baseline: float = 0.0            # bytes of a quiet predicted frame (median), 0 for intra streams
    notes: list = field(default_factory=list)
    seconds: float = 0.0             # wall time of the analysis

    @property
    def peak(self) -> float:
        return float(self.scores.max()) if self.scores.size else 0.0

    def figures(self) -> dict:
        """The numbers behind the result, JSON-ready (``plan.activity`` of a timeline result)."""
        return {"duration": round(self.duration, 3), "method": self.method, "frames": self.frames,
                "keyframes": self.keyframes, "thumbnails": self.thumbnails,
                "baseline_bytes": round(self.baseline, 1), "peak": round(self.peak, 3),
                "switches": [round(s, 2) for s in self.switches],
                "spans": [[round(s.start, 2), round(s.end, 2)] for s in self.spans],
                "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        """One line of figures, for a description that says nothing happened."""
        what = (f"{self.frames} compressed frames, {self.thumbnails} of {self.keyframes} keyframes decoded"
                if self.method != "intra frames" else f"{self.thumbnails} of {self.frames} frames decoded")
        switches = f", {len(self.switches)} whole-picture change(s) taken as lighting" if self.switches else ""
        return (f"{what}; peak activity {self.peak:.2f} of the start threshold{switches}; "
                f"analysed in {self.seconds:.1f} s")


# ----------------------------------------------------------------------------------- the pass

@dataclass
class _Thumb:
    t: float                 # seconds from the start
    area: float              # changed fraction of the picture (compact changes only)
    whole: bool              # nearly the whole picture changed


class _Background:
    """The running background of the thumbnails and the comparison of a new one with it."""

    def __init__(self):
        self.image: np.ndarray | None = None
        self.before: np.ndarray | None = None   # the background before a pending whole-picture change
        self.pending: _Thumb | None = None      # a whole-picture change waiting for the next thumbnail
        self.last = 0.0                         # time of the thumbnail before the pending one
        self.seen = 0.0                         # time of the last thumbnail
        self.switches: list = []                # (last thumbnail before, first thumbnail after)
        self.previous: np.ndarray | None = None # the thumbnail before, as it was
        self.still_for: np.ndarray | None = None    # seconds each changed pixel has stood still

    def compare(self, t: float, gray: np.ndarray) -> list:
        """The thumbnails this one settles, as [_Thumb] (a whole-picture change is settled one later)."""
        image = cv2.GaussianBlur(gray.astype(np.float32), (3, 3), 0.7)
        if self.image is None:
            self.image, self.seen, self.previous = image, t, image
            self.still_for = np.zeros_like(image)
            return [_Thumb(t, 0.0, False)]
        out = []
        if self.pending is not None:
            out.append(self._settle(image))
        area, whole, changed = _change(image, self.image)
        if whole:
            self.pending, self.last = _Thumb(t, 0.0, True), self.seen
            self.before, self.image = self.image, image
            self.still_for = np.zeros_like(image)
        else:
            out.append(_Thumb(t, area, False))
            self._update(t, image, changed)
        self.seen, self.previous = t, image
        return out

    def _update(self, t: float, image: np.ndarray, changed: np.ndarray) -> None:
        """Follow the picture where it did not change (lighting drift); where it changed, only once it
        has stood still for ABSORB seconds (a car that parked), never a moving thing, which would
        leave a ghost behind."""
        still = changed & (np.abs(image - self.previous) <= MIN_LEVEL)
        self.still_for = np.where(still, self.still_for + (t - self.seen), 0.0)
        rate = np.where(changed, np.where(self.still_for >= ABSORB, 1.0, 0.0), 0.5).astype(np.float32)
        self.image = self.image + rate * (image - self.image)

    def _settle(self, image: np.ndarray) -> _Thumb:
        """A whole-picture change that held is lighting: recalibrated. One that went away again was a
        flash or something passing close to the lens: activity at that moment."""
        pending, self.pending = self.pending, None
        went_back = _change(image, self.image)[1] and not _change(image, self.before)[1]
        if went_back:
            self.image = self.before
            pending.area, pending.whole = 1.0, False
        else:
            self.switches.append((self.last, pending.t))
        self.before = None
        return pending

    def flush(self) -> list:
        """At the end: a whole-picture change with nothing after it counts as lighting."""
        if self.pending is None:
            return []
        self.switches.append((self.last, self.pending.t))
        pending, self.pending = self.pending, None
        return [pending]


def _change(image: np.ndarray, background: np.ndarray) -> tuple[float, bool, np.ndarray]:
    """(area of the largest changed blob, whole-picture change?, changed pixels) after matching the
    background's brightness and contrast to the picture's (fitted again without the changed pixels,
    so a large thing in the picture does not skew the match)."""
    diff, shift, gain = _matched(image, background, None)
    changed = diff > _level(diff)
    if 0.0 < changed.mean() < GLOBAL_AREA:
        diff, shift, gain = _matched(image, background, ~changed)
        changed = diff > _level(diff)
    if changed.mean() > GLOBAL_AREA or abs(shift) > GLOBAL_SHIFT or not 0.8 <= gain <= 1.25:
        return float(changed.mean()), True, changed
    # Scattered pixels (noise, raindrops) go in the opening; what counts is the largest blob left,
    # since a thing that moves is one blob and rain is many small ones.
    compact = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(compact, connectivity=8)
    largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0
    return largest / compact.size, False, changed


def _matched(image: np.ndarray, background: np.ndarray, where) -> tuple[np.ndarray, float, float]:
    """|image − background matched to it| (by quartiles, over ``where`` if given), the brightness shift
    and the contrast gain."""
    a, b = (image, background) if where is None else (image[where], background[where])
    lo_i, mid_i, hi_i = np.percentile(a, (25, 50, 75))
    lo_b, mid_b, hi_b = np.percentile(b, (25, 50, 75))
    gain = (hi_i - lo_i) / max(hi_b - lo_b, 1.0)
    return np.abs(image - ((background - mid_b) * gain + mid_i)), float(mid_i - mid_b), float(gain)


def _level(diff: np.ndarray) -> float:
    """How far a pixel must differ to count as changed: 4 noise widths, at least MIN_LEVEL."""
    return max(MIN_LEVEL, 4.0 * 1.4826 * float(np.median(diff)))


class _Pass:
    """One pass over the packets: sizes of every frame, thumbnails of the keyframes worth decoding."""

    def __init__(self, stream, settings: TimelineConfig):
        self.settings = settings
        self.codec = stream.codec_context
        self.base = float(stream.time_base)
        self.intra = self.codec.name in INTRA_CODECS
        self.pts: list = []
        self.sizes: list = []
        self.keys: list = []
        self.positions: list = []          # frames since the last keyframe, in decode order
        self.position = 0
        self.gop: list = []                # sizes of the predicted frames of the GOP being read
        self.gop_sizes: deque = deque(maxlen=RECENT_GOPS)     # the median predicted frame of each
        self.gop_bytes: deque = deque(maxlen=RECENT_GOPS)     # the mean one (a CBR stream keeps it flat)
        self.held = None                   # (pts, packet) of the last keyframe, not decoded yet
        self.last_thumb = -math.inf        # pts seconds of the last decoded picture
        self.was_busy = False              # the GOP before the last one grew
        self.background = _Background()
        self.thumbs: list = []             # [_Thumb], times in pts seconds
        self.decoded = 0
        self.error: str | None = None

    def feed(self, packet) -> None:
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None:
            return
        pts = stamp * self.base
        key = bool(packet.is_keyframe)
        if self.intra or (key and len(self.keys) >= 8 and all(self.keys[-8:])):
            self.intra = True
            self._intra(pts, packet)
        elif key:
            self._keyframe(pts, packet)
        else:
            self.position += 1
            if packet.size:
                self.gop.append(packet.size)
        self.pts.append(pts)
        self.sizes.append(packet.size)
        self.keys.append(key)
        self.positions.append(0 if key else self.position)

    def _keyframe(self, pts: float, packet) -> None:
        busy = self._busy()
        if self.gop:
            self.gop_sizes.append(float(np.median(self.gop)))
            self.gop_bytes.append(float(np.mean(self.gop)))
        self.gop, self.position = [], 0
        turned = busy != self.was_busy
        if turned and busy and self.held is not None:
            self._decode(*self.held)      # the keyframe before the sizes grew: what was there before
        self.held = None
        # Every keyframe where the sizes start or stop growing (what came, what is left), the
        # keyframe after a whole-picture change (did it stay?), at least one every thumbnail_every
        # seconds, and every keyframe of a flat (CBR) stream, where sizes tell nothing.
        due = pts - self.last_thumb >= self.settings.thumbnail_every - 1e-6
        if turned or due or self.background.pending is not None or self._flat():
            self._decode(pts, packet)
        else:
            self.held = (pts, packet)
        self.was_busy = busy

    def _busy(self) -> bool:
        """Did the GOP just read grow against the recent ones (or hold one very large frame)?"""
        if not self.gop:
            return False
        if len(self.gop_sizes) < 3:
            return True
        reference = float(np.median(self.gop_sizes))
        return float(np.median(self.gop)) > reference * (1 + BUSY_RISE) or max(self.gop) > 4 * reference

    def _flat(self) -> bool:
        """GOPs all about the same size: a constant-bitrate stream, where sizes hide motion."""
        if len(self.gop_bytes) < 8:
            return False
        sizes = np.asarray(self.gop_bytes, float)
        middle = float(np.median(sizes))
        return middle > 0 and float(np.median(np.abs(sizes - middle))) / middle < FLAT

    def _intra(self, pts: float, packet) -> None:
        if pts - self.last_thumb >= 1.0 / self.settings.intra_fps - 1e-6:
            self._decode(pts, packet)

    def _decode(self, pts: float, packet) -> None:
        """Decode one keyframe on its own (drained, so B-frame delays cannot hold it back)."""
        try:
            frames = self.codec.decode(packet) + self.codec.decode(None)
        except av.FFmpegError:
            frames = []
        finally:
            self.codec.flush_buffers()
        if not frames:
            return
        self.decoded += 1
        self.last_thumb = pts
        self.thumbs.extend(self.background.compare(pts, _gray(frames[0])))

    def finish(self) -> None:
        self.thumbs.extend(self.background.flush())


def _gray(frame) -> np.ndarray:
    """A small grey picture of ``frame``: its 8-bit luma plane shrunk, or a conversion for other formats."""
    width = min(THUMB_WIDTH, frame.width)
    height = max(2, round(frame.height * width / frame.width))
    name = frame.format.name
    if name in LUMA_FIRST:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
        return cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)
    return frame.reformat(width=width, height=height, format="gray").to_ndarray()


def analyse(path, settings: TimelineConfig | None = None, on_progress: Progress | None = None) -> Analysis:
    """Activity over time and the active spans of one recording, from one pass over its packets.

    ``on_progress(seconds read, duration or None)`` is called about twice a second; an exception it
    raises (a stop) ends the analysis. Raises AnalysisError (a MediaError) when nothing usable is read.
    """
    settings = settings or TimelineConfig()
    began = time.perf_counter()
    with open_video(str(path)) as (container, stream):
        stream.thread_type = "SLICE"
        duration_hint = _header_duration(container, stream)
        work = _Pass(stream, settings)
        tick = began
        try:
            for packet in container.demux(stream):
                if packet.size == 0 and packet.pts is None:
                    continue            # the demuxer's empty packet at the end
                work.feed(packet)
                if on_progress is not None and time.perf_counter() - tick > 0.5:
                    tick = time.perf_counter()
                    on_progress(work.pts[-1] - work.pts[0], duration_hint)
        except av.FFmpegError as exc:
            work.error = getattr(exc, "strerror", None) or str(exc)
        work.finish()
        start = stream.start_time * work.base if stream.start_time is not None else None
    if not work.pts:
        raise AnalysisError(f"{path}: no video packets could be read for the activity analysis "
                            "(the file is damaged or empty)")
    analysis = _score(work, settings, start)
    analysis.seconds = time.perf_counter() - began
    if work.error:
        analysis.notes.append(f"activity analysis stopped after {analysis.duration:.1f} s: {work.error} "
                              "(the file is damaged or cut; the rest is not analysed)")
    elif duration_hint and duration_hint - analysis.duration > max(1.0, duration_hint / 20):
        analysis.notes.append(f"activity analysis covers {analysis.duration:.1f} s of the {duration_hint:.1f} s "
                              "the header gives (a cut-off file?)")
    return analysis


def _header_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


# ----------------------------------------------------------------------------------- scoring

def _score(work: _Pass, settings: TimelineConfig, start: float | None) -> Analysis:
    pts = np.asarray(work.pts, float)
    origin = start if start is not None and start <= pts.min() + 1.0 else float(pts.min())
    t = pts - origin
    step = settings.step
    duration = float(max(t.max() + _frame_step(np.sort(t)), step))
    bins = max(1, math.ceil(duration / step))
    thumbs = [_Thumb(th.t - origin, th.area, th.whole) for th in work.thumbs]
    changes = [(a - origin, b - origin) for a, b in work.background.switches]
    packets, baseline, switches = np.zeros(bins), 0.0, [b for _, b in changes]
    if not work.intra:
        switches = _when(t, work, changes)
        packets, baseline = _packet_scores(t, work, bins, step, switches, settings)
    thumb_scores = _thumb_scores(thumbs, settings)
    scores = packets.copy()
    for thumb, score in zip(thumbs, thumb_scores):
        b = min(bins - 1, int(thumb.t // step))
        scores[b] = max(scores[b], score)
    spans = _spans(packets, thumbs, thumb_scores, step, duration, settings, intra=work.intra)
    return Analysis(duration=duration, step=step, scores=scores, spans=spans,
                    method="intra frames" if work.intra else "packets and keyframes", frames=len(t),
                    keyframes=int(np.sum(work.keys)), thumbnails=work.decoded, switches=switches,
                    baseline=baseline)


def _frame_step(t: np.ndarray) -> float:
    steps = np.diff(t)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 0.0


def _packet_scores(t, work: _Pass, bins: int, step: float, switches: list, settings) -> tuple[np.ndarray, float]:
    """Per step: how far the predicted frames rose above the recording's own quiet level, scaled so
    that 1.0 is the start threshold. Also returns the typical size of a predicted frame."""
    sizes = np.asarray(work.sizes, float)
    # Places in the GOP, finer near the keyframe: 1, 2, 3, 4–7, 8–15, … frames after it.
    places = np.floor(np.log2(np.maximum(np.asarray(work.positions), 1))).astype(int)
    places = np.where(np.asarray(work.positions) < 4, np.asarray(work.positions), places + 2)
    predicted = ~np.asarray(work.keys) & (sizes > 0)
    if predicted.sum() < 3:
        return np.zeros(bins), 0.0
    typical = float(np.median(sizes[predicted]))
    # The usual size at each place (the frames right after a keyframe, the slow growth of residuals
    # towards the next one); a place seen too rarely to tell takes the usual size of all.
    usual = np.full(places.max() + 1, typical)
    for place in np.unique(places[predicted]):
        at = predicted & (places == place)
        if at.sum() >= 8:
            usual[place] = float(np.median(sizes[at]))
    ratio = sizes[predicted] / np.maximum(usual[places[predicted]], 1.0)
    index = np.minimum((t[predicted] // step).astype(int), bins - 1)
    value = _bin_medians(index, ratio, bins)
    # The baseline and the noise start afresh where the picture changed as a whole (night noise is
    # not day noise) and where the frame rate changed (a slower camera codes more per frame).
    changes = list(switches) + _rate_changes(t)
    cuts = sorted({min(bins, max(0, int(c // step))) for c in changes})
    scores = np.zeros(bins)
    for lo, hi in zip([0] + cuts, cuts + [bins]):
        if hi > lo:
            scores[lo:hi] = _rise(value[lo:hi], step, settings)
    _settle(scores, changes, step)
    return scores, typical


def _rise(value: np.ndarray, step: float, settings: TimelineConfig) -> np.ndarray:
    """Scores of one stretch with one baseline: the rise over its quiet level in noise widths, 1.0 at
    the start threshold."""
    rise = value / _quiet_level(value, step, settings.baseline_window) - 1.0
    # The noise of the steps, from the differences between neighbours: a long stretch of rain or
    # activity moves the level, not the differences (MAD of a difference is √2 that of a value).
    steps = np.diff(rise) if rise.size > 2 else np.zeros(1)
    noise = max(1.4826 * float(np.median(np.abs(steps))) / math.sqrt(2), 0.02)
    return np.maximum(rise / max(settings.start * noise, settings.min_rise), 0.0)


def _rate_changes(t: np.ndarray, window: float = 5.0) -> list:
    """Times where the frame rate changed by half or more and stayed so (variable-frame-rate cameras
    slow down in the dark)."""
    counts = np.bincount((np.sort(t) // window).astype(int)).astype(float)
    out = []
    for i in range(1, len(counts) - 1):
        before, now, after = counts[i - 1], counts[i], counts[i + 1]
        if min(before, now) > 0 and max(before, now) / min(before, now) >= 1.5 and abs(after - now) <= 0.2 * now:
            out.append(i * window)
    return out


def _bin_medians(index: np.ndarray, values: np.ndarray, bins: int) -> np.ndarray:
    """The median of ``values`` per bin; empty bins take their neighbours' values."""
    out = np.full(bins, np.nan)
    order = np.argsort(index, kind="stable")
    index, values = index[order], values[order]
    edges = np.flatnonzero(np.diff(index)) + 1
    for chunk_index, chunk in zip(np.split(index, edges), np.split(values, edges)):
        out[chunk_index[0]] = np.median(chunk)
    known = np.flatnonzero(~np.isnan(out))
    if known.size == 0:
        return np.ones(bins)
    return np.interp(np.arange(bins), known, out[known])


def _quiet_level(value: np.ndarray, step: float, window: float) -> np.ndarray:
    """A low percentile of ``value`` over ``window`` seconds around each step."""
    half = max(1, int(window / step / 2))
    hop = max(1, half // 8)
    centres = np.arange(0, len(value), hop)
    quiet = [np.percentile(value[max(0, c - half):c + half + 1], 30) for c in centres]
    return np.maximum(np.interp(np.arange(len(value)), centres, quiet), 1e-6)


def _when(t: np.ndarray, work: _Pass, changes: list) -> list:
    """When each whole-picture change happened: the largest predicted frame between the thumbnail
    before it and the one that showed it (the encoder re-codes the picture there)."""
    sizes = np.asarray(work.sizes, float)
    predicted = ~np.asarray(work.keys)
    typical = float(np.median(sizes[predicted])) if predicted.any() else 0.0
    out = []
    for after, at in changes:
        inside = np.flatnonzero(predicted & (t > after) & (t <= at))
        largest = inside[np.argmax(sizes[inside])] if inside.size else None
        # An encoder with weighted prediction codes a brightness step cheaply: then nothing marks
        # the moment, and the middle of the interval is the best guess.
        spike = largest is not None and sizes[largest] > 3 * typical
        out.append(float(t[largest]) if spike else (after + at) / 2)
    return out


def _settle(scores: np.ndarray, changes: list, step: float) -> None:
    """Nothing counts from just before a whole-picture or frame-rate change to SETTLE seconds after it:
    the encoder re-codes the picture and the camera settles its exposure there."""
    for when in changes:
        scores[max(0, int(when // step) - 1):max(0, int((when + SETTLE) // step) + 1)] = 0.0


def _thumb_scores(thumbs: list, settings: TimelineConfig) -> list:
    """Per thumbnail, its changed area relative to the larger of ``min_area`` and three times the area
    that changes in most thumbnails (a tree in the wind: its area shows in the 30th percentile)."""
    areas = np.asarray([th.area for th in thumbs if not th.whole], float)
    usual = 3.0 * float(np.percentile(areas, 30)) if areas.size >= 5 else 0.0
    threshold = max(settings.min_area, usual)
    return [0.0 if th.whole else th.area / threshold for th in thumbs]


def _spans(packets: np.ndarray, thumbs: list, thumb_scores: list, step: float, duration: float,
           settings: TimelineConfig, intra: bool) -> list:
    """Hysteresis over the packet scores, seeded by them and by changed thumbnails; thumbnails also
    cover what packets cannot see (flat streams, intra streams), veto packet-only stretches in which a
    keyframe looked the same as the background (rain, noise, drift) and trim stretches to the unchanged
    keyframes around the changed ones. Weak stretches nothing confirms must hold some evidence."""
    end_level = settings.end / settings.start
    seeds = packets >= 1.0
    for th, score in zip(thumbs, thumb_scores):
        if score >= 1.0:
            seeds[min(len(seeds) - 1, int(th.t // step))] = True
    grown = _grow(seeds, packets >= end_level)
    # Judged together when close (drift comes and goes around a threshold), joined by merge_gap after.
    runs = _merge([(lo * step, min(duration, (hi + 1) * step)) for lo, hi in _runs(grown)], 2 * step + 1e-9)
    if not intra:
        runs = [_trimmed(r, thumbs, thumb_scores) for r in runs
                if not _vetoed(r, packets, thumbs, thumb_scores, step) and _evident(r, packets, thumbs, thumb_scores,
                                                                                     step)]
    runs += _thumb_runs(thumbs, thumb_scores, runs, settings, duration)
    runs = [r for r in _merge(sorted(runs), settings.merge_gap) if r[1] - r[0] >= settings.min_event - 1e-9]
    return [Span(lo, hi, _peak(packets, thumbs, thumb_scores, lo, hi, step)) for lo, hi in runs]


def _evident(run: tuple, packets: np.ndarray, thumbs: list, scores: list, step: float) -> bool:
    """A stretch no changed keyframe confirms must rise sharply (STRONG) or hold EVIDENCE score-seconds:
    a blip of noise barely over the threshold is no event."""
    if any(run[0] - step <= th.t <= run[1] + step and s >= 1.0 for th, s in zip(thumbs, scores)):
        return True
    inside = packets[int(run[0] // step):max(int(run[0] // step) + 1, int(math.ceil(run[1] / step)))]
    return float(inside.max()) >= STRONG or float(inside.sum()) * step >= EVIDENCE


def _grow(seeds: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Every run of ``keep | seeds`` that contains a seed."""
    out = np.zeros_like(seeds)
    for lo, hi in _runs(keep | seeds):
        if seeds[lo:hi + 1].any():
            out[lo:hi + 1] = True
    return out


def _runs(mask: np.ndarray) -> list:
    """(first, last) index of every run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def _vetoed(run: tuple, packets: np.ndarray, thumbs: list, scores: list, step: float) -> bool:
    """A stretch from packet sizes alone holding keyframes where the picture looked like the
    background and none where it did not: lighting drift, rain or noise, not a thing moving (which
    would have been in those keyframes). One such keyframe is enough unless the sizes rose sharply."""
    inside = [s for th, s in zip(thumbs, scores) if run[0] + step < th.t < run[1] - step and not th.whole]
    if not inside or max(inside) >= 1.0:
        return False
    return len(inside) >= 2 or _peak(packets, [], [], run[0], run[1], step) < STRONG


def _trimmed(run: tuple, thumbs: list, scores: list) -> tuple:
    """A stretch with changed keyframes, cut at the unchanged keyframes just before the first and
    just after the last of them: nothing new was in the picture at those moments."""
    lo, hi = run
    inside = [(th.t, s) for th, s in zip(thumbs, scores) if lo < th.t < hi and not th.whole]
    active = [t for t, s in inside if s >= 1.0]
    if not active:
        return run
    before = [t for t, s in inside if s < 0.5 and t < active[0]]
    after = [t for t, s in inside if s < 0.5 and t > active[-1]]
    return (before[-1] if before else lo, after[0] if after else hi)


def _thumb_runs(thumbs: list, scores: list, runs: list, settings: TimelineConfig, duration: float) -> list:
    """Changed thumbnails that the packets did not turn into a long enough stretch (a flat stream, an
    intra stream): from halfway to the previous thumbnail to halfway to the next one."""
    out = []
    for i, (th, score) in enumerate(zip(thumbs, scores)):
        if score < 1.0:
            continue
        covered = [r for r in runs if r[0] <= th.t <= r[1] and r[1] - r[0] >= settings.min_event]
        if covered:
            continue
        before = thumbs[i - 1].t if i else max(0.0, th.t - settings.thumbnail_every)
        after = thumbs[i + 1].t if i + 1 < len(thumbs) else min(duration, th.t + settings.thumbnail_every)
        out.append(((before + th.t) / 2, (th.t + after) / 2))
    return out


def _merge(runs: list, gap: float) -> list:
    out: list = []
    for lo, hi in runs:
        if out and lo - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _peak(packets, thumbs, scores, lo: float, hi: float, step: float) -> float:
    inside = packets[int(lo // step):max(int(lo // step) + 1, int(math.ceil(hi / step)))]
    peak = float(inside.max()) if inside.size else 0.0
    for th, s in zip(thumbs, scores):
        if lo <= th.t <= hi:
            peak = max(peak, s)
    return round(peak, 3)


# ----------------------------------------------------------------------------------- using spans

def segments(analysis: Analysis, settings: TimelineConfig) -> list:
    """The stretches to describe, one request each: spans padded by ``pad``, joined when less than
    ``segment_gap`` apart, split evenly when longer than ``max_segment``."""
    padded = [(max(0.0, s.start - settings.pad), min(analysis.duration, s.end + settings.pad), s.score)
              for s in analysis.spans]
    joined: list = []
    for lo, hi, score in padded:
        if joined and lo - joined[-1][1] < settings.segment_gap:
            joined[-1] = (joined[-1][0], max(joined[-1][1], hi), max(joined[-1][2], score))
        else:
            joined.append((lo, hi, score))
    out = []
    for lo, hi, score in joined:
        parts = max(1, math.ceil((hi - lo) / settings.max_segment - 1e-9))
        width = (hi - lo) / parts
        for k in range(parts):
            a, b = lo + k * width, lo + (k + 1) * width
            out.append(Span(round(a, 3), round(b, 3), _span_peak(analysis, a, b, score)))
    return out


def _span_peak(analysis: Analysis, lo: float, hi: float, fallback: float) -> float:
    part = analysis.scores[int(lo // analysis.step):max(int(lo // analysis.step) + 1, math.ceil(hi / analysis.step))]
    return round(float(part.max()), 3) if part.size else fallback


def pick_times(analysis: Analysis, segment: Span, n: int, min_gap: float, first: float | None = None) -> list:
    """Up to ``n`` frame times inside ``segment``: ``first`` (default: its start) always, the rest
    spread over its activity — more where the score is higher — never two closer than ``min_gap``.

    Weights are the scores inside the active spans, capped (one changed keyframe must not draw every
    frame to itself) and at least 1 there; outside them 0. A segment without activity gets even spacing.
    """
    first = segment.start if first is None else first
    times, weights = _weights(analysis, segment)
    picked = [round(first, 3)]
    if n > 1 and weights.sum() > 0:
        cumulative = np.cumsum(weights) / weights.sum()
        wanted = [times[min(len(times) - 1, int(np.searchsorted(cumulative, q)))]
                  for q in (np.arange(n - 1) + 0.5) / (n - 1)]
        by_weight = [times[i] for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
        picked = _spaced(first, wanted + by_weight, n, min_gap)
    elif n > 1:
        even = [segment.start + (k + 0.5) * segment.length / (n - 1) for k in range(n - 1)]
        picked = _spaced(first, even, n, min_gap)
    return picked


def _weights(analysis: Analysis, segment: Span) -> tuple:
    step = analysis.step
    lo = max(0, int(segment.start // step))
    hi = max(lo + 1, min(len(analysis.scores), math.ceil(segment.end / step)))
    times = np.clip((np.arange(lo, hi) + 0.5) * step, segment.start, max(segment.start, segment.end - 1e-3))
    inside = np.zeros(hi - lo, bool)
    for span in analysis.spans:
        inside |= (times >= span.start) & (times < span.end)
    weights = np.where(inside, np.clip(analysis.scores[lo:hi], 1.0, WEIGHT_CAP), 0.0)
    return times, weights


def _spaced(first: float, candidates: list, n: int, min_gap: float) -> list:
    """``first``, then candidates in their order that keep ``min_gap`` from every time kept, up to n."""
    kept = [first]
    for t in candidates:
        if len(kept) >= n:
            break
        if all(abs(t - k) >= min_gap for k in kept):
            kept.append(float(t))
    return sorted(round(t, 3) for t in kept)


def clock(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour on: how times of a recording are written for people."""
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
