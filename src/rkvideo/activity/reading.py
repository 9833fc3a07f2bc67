"""The one pass over a recording's packets, and the analysis it adds up to.

Why one pass: every packet is read once, in order, without decoding; only keyframes are decoded, and
only those worth it: where the sizes start or stop growing (what came, what is left), at least one
every ``thumbnail_every`` seconds, and all of them in a flat (constant-bitrate) stream, where sizes
tell nothing. A helper thread decodes them while the pass reads on. The keyframe before a GOP whose sizes
grew is kept undecoded until then, so the picture before the change is seen too. All-intra streams
(MJPEG) have no predicted frames: ``intra_fps`` frames per second are decoded instead.

Cut-off files and read errors end the pass with a note (what was read is analysed); a file with no
usable packets raises ``AnalysisError``.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np

from ..config import TimelineConfig
from ..media import open_video
from .packets import packet_scores, when
from .result import Analysis, AnalysisError
from .spans import spans, thumb_scores
from .thumbnails import Background, Thumb, gray

# Codecs whose every frame is a keyframe: their sizes say nothing about motion.
INTRA_CODECS = {"mjpeg", "jpeg2000", "prores", "dnxhd", "rawvideo", "png", "ffv1", "huffyuv", "utvideo"}
RECENT_GOPS = 16             # GOPs the online "did this GOP grow?" check compares with
BUSY_RISE = 1.0              # a GOP whose median packet grew this much (doubled) decodes its keyframes
AHEAD = 4                    # keyframes that may wait for the decoding thread
FLAT = 0.03                  # GOP sizes varying less than this (MAD / median) look like CBR

Progress = Callable[[float, float | None], None]      # (seconds read, duration if known)


class Pass:
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
        self.pictures = _Pictures(self.codec)
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
        # Every keyframe where the sizes start or stop growing (what came, what is left), at least
        # one every thumbnail_every seconds, and every keyframe of a flat (CBR) stream, where sizes
        # tell nothing. Decided from the packets alone, never from a picture still being decoded, so
        # the same file always gives the same analysis (a resumed timeline finds its segments again).
        due = pts - self.last_thumb >= self.settings.thumbnail_every - 1e-6
        if turned or due or self._flat():
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
        self.last_thumb = pts
        self.pictures.submit(pts, packet)

    def finish(self) -> None:
        self.pictures.finish()

    def close(self) -> None:
        self.pictures.close()

    @property
    def thumbs(self) -> list:
        return self.pictures.thumbs

    @property
    def decoded(self) -> int:
        return self.pictures.decoded

    @property
    def background(self) -> Background:
        return self.pictures.background


class _Pictures:
    """Keyframes decoded and compared with the background on a helper thread while the pass reads on:
    PyAV releases the GIL while it decodes, so on two cores reading and decoding overlap. One thread,
    so the thumbnails are compared in time order; at most AHEAD keyframes wait."""

    def __init__(self, codec):
        self.codec = codec
        self.background = Background()
        self.thumbs: list = []             # [Thumb], times in pts seconds
        self.decoded = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rkvideo-keyframes")
        self.waiting: deque = deque()

    def submit(self, pts: float, packet) -> None:
        self.waiting.append(self.pool.submit(self._compare, pts, packet))
        while len(self.waiting) > AHEAD:
            self.waiting.popleft().result()

    def _compare(self, pts: float, packet) -> None:
        """Decode one keyframe on its own (drained, so B-frame delays cannot hold it back)."""
        try:
            frames = self.codec.decode(packet) + self.codec.decode(None)
        except av.FFmpegError:
            frames = []         # a damaged keyframe: the next one will do
        finally:
            self.codec.flush_buffers()
        if frames:
            self.decoded += 1
            self.thumbs.extend(self.background.compare(pts, gray(frames[0])))

    def finish(self) -> None:
        while self.waiting:
            self.waiting.popleft().result()
        self.thumbs.extend(self.background.flush())

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


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
        work = Pass(stream, settings)
        try:
            _read(container, stream, work, on_progress, duration_hint)
            work.finish()
        finally:
            work.close()
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


def _read(container, stream, work: Pass, on_progress: Progress | None, duration_hint: float | None) -> None:
    """Feed every packet to the pass; a read error ends it like the end of the file (noted)."""
    tick = time.perf_counter()
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


def _header_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _score(work: Pass, settings: TimelineConfig, start: float | None) -> Analysis:
    """The pass's records as an Analysis: times from the first frame, packet and keyframe scores, spans."""
    pts = np.asarray(work.pts, float)
    origin = start if start is not None and start <= pts.min() + 1.0 else float(pts.min())
    t = pts - origin
    step = settings.step
    duration = float(max(t.max() + frame_step(np.sort(t)), step))
    bins = max(1, math.ceil(duration / step))
    thumbs = [Thumb(th.t - origin, th.area, th.whole) for th in work.thumbs]
    changes = [(a - origin, b - origin) for a, b in work.background.switches]
    packets, baseline, switches = np.zeros(bins), 0.0, [b for _, b in changes]
    if not work.intra:
        sizes, keys = np.asarray(work.sizes, float), np.asarray(work.keys)
        switches = when(t, sizes, keys, changes)
        packets, baseline = packet_scores(t, sizes, keys, np.asarray(work.positions), bins, step, switches,
                                          settings)
    by_thumb = thumb_scores(thumbs, settings)
    scores = packets.copy()
    for thumb, score in zip(thumbs, by_thumb):
        b = min(bins - 1, int(thumb.t // step))
        scores[b] = max(scores[b], score)
    found = spans(packets, thumbs, by_thumb, step, duration, settings, intra=work.intra)
    return Analysis(duration=duration, step=step, scores=scores, spans=found,
                    method="intra frames" if work.intra else "packets and keyframes", frames=len(t),
                    keyframes=int(np.sum(work.keys)), thumbnails=work.decoded, switches=switches,
                    baseline=baseline)


def frame_step(t: np.ndarray) -> float:
    steps = np.diff(t)
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 0.0
