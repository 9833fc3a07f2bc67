"""Media in, frames out: N frames from a recording, or photos, as RGB arrays.

Why it is built this way
------------------------
A vision-language model looks at a handful of frames, so decoding a whole
recording to keep eight of them wastes nearly all the work (24–59× the cost
of seeking on a 10-minute 1080p clip, measured). Instead PyAV seeks to the
keyframe before each target and the decoder runs forward only as far as the
target needs:

* Targets are the centres of N equal segments, t_i = start + (i + ½)·D/N,
  so the frames spread evenly and each one stands for its own stretch.
* ``fast`` accepts any frame within a quarter segment of the target. A
  keyframe there costs one decode, so it is taken as it is; otherwise the
  decoder stops a quarter segment short of the target. Every frame stays
  inside its own segment [start + i·D/N, start + (i+1)·D/N).
* ``exact`` returns the first frame at or after the target (the last frame
  if none), which is what a timestamped caption should point at.
* When the next target lies in the GOP the decoder is already in, it keeps
  decoding: seeking back to the same keyframe made long-GOP files cost more
  than decoding them whole. This needs a real keyframe index (mp4, mov,
  avi, mkv with cues); without one (MPEG-TS) every target seeks.
* Seeks can land late: MPEG-TS lands on the keyframe *after* the target, and
  mp4 indexes decode times, so a keyframe may be shown after its index time.
  Every seek is checked against its first decoded frame and redone further
  back until it lands early enough.
* Headers disagree about where a stream ends (mkv stores an end time, a VFR
  mp4 a sum of decode-time steps, a truncated file its planned length, a
  live mkv nothing), so the packets after the last keyframe decide.
* PyAV returns frames as stored; the display matrix (``frame.rotation``) is
  applied here so frames come out upright.
* Everything is a generator, so encoding can start on the first frame while
  the next one decodes; PyAV releases the GIL while decoding, and
  ``thread_type = "AUTO"`` lets FFmpeg use both cores of a small board.

Problems with a file raise ``MediaError`` with one line, "<file>: <what is
wrong> (<what to do>)". Problems that still leave usable frames (a short
clip, a cut-off file) become human-readable notes instead.

Photos are sized from their header before they are decoded (``imagesize``).
A JPEG is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg itself when that
still leaves the encoder's input side (``side``), so a large photo costs a
fraction of the memory and time; PNG, BMP, WebP and TIFF decode at full size
(a 20000×20000 PNG of 1 MB is 1.2 GB decoded, 2.4 GB at the peak). An image
whose decoded size would exceed ``max_pixels`` is refused before decoding.
"""
from __future__ import annotations

import bisect
import math
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from . import imagesize
from .errors import UsageError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".ts")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MODES = ("fast", "exact")

# Containers whose keyframe index is complete before decoding starts. MPEG-TS
# builds a partial one while reading, which would mislead GOP decisions.
_INDEXED = {"mov", "mp4", "avi", "matroska", "webm"}


class MediaError(UsageError):
    """A file cannot be used: the message names the file and the fix."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray     # H×W×3 uint8 RGB, upright
    index: int            # position among the sampled frames, 0-based
    pts: int | None       # presentation timestamp in stream time base (None for images)
    seconds: float        # time from the start of the recording (0.0 for images)
    source: str           # the file it came from


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float       # seconds
    start: float          # seconds of the first frame's timestamp
    width: int            # as displayed, i.e. after rotation
    height: int
    fps: float
    frame_count: int | None
    codec: str
    rotation: int         # degrees counter-clockwise applied to stored frames: 0, 90, 180, 270


# ------------------------------------------------------------------ errors

def _fail(path, what: str, todo: str) -> MediaError:
    return MediaError(f"{path}: {what} ({todo})")


def _reason(exc: BaseException) -> str:
    """FFmpeg's words without the file name it appends."""
    return getattr(exc, "strerror", None) or str(exc)


_DAMAGED = "the file is damaged, incomplete or not a video; copy it again or re-encode it"


def _check_file(path) -> None:
    """Refuse what no demuxer should see: a FIFO would block, a folder or an
    empty file only gives a vague FFmpeg message."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _fail(path, "file not found", "check the path") from None
    except PermissionError:
        raise _fail(path, "permission denied", "make the file readable for this user") from None
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror}", "check the path and the disk") from None
    if stat.S_ISDIR(info.st_mode):
        raise _fail(path, "is a directory", "pass the files inside it")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, "is not a regular file", "pass a file, not a pipe or a device")
    if info.st_size == 0:
        raise _fail(path, "file is empty (0 bytes)", "the recording or the copy did not finish; copy it again")
    if not os.access(path, os.R_OK):
        raise _fail(path, "permission denied", "make the file readable for this user")


@contextmanager
def _open(path: str):
    _check_file(path)
    try:
        container = av.open(path, metadata_errors="ignore")
    except PermissionError:
        raise _fail(path, "permission denied", "make the file readable for this user") from None
    except (av.FFmpegError, OSError) as exc:
        raise _fail(path, f"not a readable video: {_reason(exc)}", _DAMAGED) from None
    with container:
        yield container


def _video_stream(container, path: str):
    if container.streams.video:
        return container.streams.video[0]
    if container.streams.audio:
        raise _fail(path, "has audio but no video stream", "rkvideo describes pictures; pass a video recording")
    raise _fail(path, "has no video stream", "pass a video recording")


# ---------------------------------------------------------------- timeline

@dataclass(frozen=True)
class _Timeline:
    """A video stream's extent in its own time base, and its keyframe index."""
    base: Fraction
    start: int                     # pts of the first frame
    end: int                       # pts just after the last frame
    frames: int | None             # frame count, if known
    key_pts: tuple[int, ...]       # estimated pts of each keyframe, from the index (sorted)
    floor: int                     # seeking here lands on the first frame
    header_end: int | None         # where the header says the stream ends

    @property
    def duration(self) -> float:
        return float((self.end - self.start) * self.base)

    def seconds(self, pts: int) -> float:
        return float((pts - self.start) * self.base)

    def ticks(self, seconds: float) -> int:
        return max(1, round(seconds / self.base))

    def key_before(self, pts) -> int | None:
        """Estimated pts of the last keyframe at or before ``pts``."""
        i = bisect.bisect_right(self.key_pts, pts) - 1
        return self.key_pts[i] if i >= 0 else None


def _timeline(container, stream, path: str) -> _Timeline:
    base = stream.time_base
    start = stream.start_time if stream.start_time is not None else _first_pts(container, stream)
    if base is None or start is None:
        raise _fail(path, "video has no timestamps", "remux it first, e.g. ffmpeg -i IN -c copy OUT.mkv")
    header_end = _header_end(container, stream, start)
    end, counted = _packet_end(container, stream, start, header_end)
    if end is None:
        raise _fail(path, "no video frames found", _DAMAGED)
    key_pts, floor = _keyframes(container, stream, start)
    frames = counted if counted is not None else (stream.frames or None)
    return _Timeline(base, start, end, frames, key_pts, floor, header_end)


def _first_pts(container, stream) -> int | None:
    for packet in _packets(container, stream):
        return packet.pts
    return None


def _header_end(container, stream, start: int) -> int | None:
    """Where the headers say the stream ends: the latest of their figures.

    Used to start the search for the real end and to notice cut-off files
    (AVI keeps its planned frame count, mp4 its planned duration). Matroska
    gives only the container's figure, which there is an end time, not a
    length.
    """
    ends = []
    if stream.duration:
        ends.append(start + stream.duration)
    rate = stream.average_rate
    if stream.frames and rate:
        ends.append(start + round(stream.frames / (rate * stream.time_base)))
    if container.duration and not ends:
        ticks = round(Fraction(container.duration, av.time_base) / stream.time_base)
        ends.append(ticks if "matroska" in container.format.name else start + ticks)
    return max(ends) if ends else None


def _packets(container, stream) -> Iterator:
    """Demuxed packets with timestamps; a read error ends them like EOF."""
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                yield packet
    except av.FFmpegError:
        return


def _retreat(ts: int, floor: int, step: int) -> Iterator[int]:
    """Seek positions: ts, then further back by doubling steps, then floor."""
    while ts > floor:
        yield ts
        ts, step = max(floor, ts - step), step * 2
    yield floor


def _packet_end(container, stream, start: int, guess: int | None) -> tuple[int | None, int | None]:
    """End of the stream from the packets after its last keyframe.

    A backward seek from ``guess`` lands on the last keyframe before it, so
    a guess past the end costs nothing; one too early costs reading more.
    Returns (end pts, frame count); the count is known only when the packets
    read began at the first frame. With no guess, all packets are read.
    """
    second = max(1, round(1 / stream.time_base))
    floor = start - second     # see _keyframes
    for ts in _retreat(guess if guess is not None else floor, floor, second):
        try:
            container.seek(ts, stream=stream, backward=True)
        except av.FFmpegError:
            continue
        packets = list(_packets(container, stream))
        # Count from a keyframe: with B-frames the last frame shown is not the
        # last one stored, and MPEG-TS seeks land anywhere in a GOP.
        first_key = next((i for i, p in enumerate(packets) if p.is_keyframe), None)
        if first_key is not None:
            stamps = [(p.pts, p.duration) for p in packets[first_key:]]
            count = len(packets) if first_key == 0 and packets[0].pts <= start else None
            return _end_of(stamps, stream), count
    return None, None


def _end_of(stamps: list[tuple[int, int | None]], stream) -> int:
    """Last pts plus one frame's duration (from the packet, or the usual step)."""
    last, duration = max(stamps)
    if not duration:
        pts = sorted(s for s, _ in stamps)
        steps = sorted(b - a for a, b in zip(pts, pts[1:]) if b > a)
        rate = stream.average_rate or stream.guessed_rate
        duration = steps[len(steps) // 2] if steps else (round(1 / (rate * stream.time_base)) if rate else 1)
    return last + duration


def _keyframes(container, stream, start: int) -> tuple[tuple[int, ...], int]:
    """Keyframe times from a real index (mkv cues are loaded by the first
    seek), and the seek position that lands on the first frame.

    mp4 indexes decode times; the first keyframe is shown at ``start``, so
    shifting by that difference estimates every keyframe's display time.
    An estimate a few frames off only costs a few decodes: seeks are checked.
    Without an index, the first frame is reached by seeking a second early:
    decode times run ahead of display times, and MPEG-TS lands on the first
    keyframe *after* the position asked for.
    """
    no_index = (), start - max(1, round(1 / stream.time_base))
    if not _INDEXED & set(container.format.name.split(",")):
        return no_index
    stamps = [e.timestamp for e in (stream.index_entries or ()) if e.is_keyframe]
    if not stamps:
        return no_index
    shift = start - stamps[0]
    return tuple(s + shift for s in stamps), min(start, stamps[0])


# ------------------------------------------------------------------ cursor

class _Cursor:
    """The decoder's place in the stream: seeks reset it, pulls move it on.

    One decoded frame can wait in ``pending``: a frame read to check a seek
    or to end a search is kept for the next target instead of being lost.
    """

    def __init__(self, container, stream, line: _Timeline):
        self.container, self.stream, self.line = container, stream, line
        self.frames: Iterator = iter(())
        self.pending = None        # decoded, not consumed
        self.prev = None           # last consumed frame since the last seek
        self.error: tuple[int | None, str] | None = None   # first failure: (pts before it, message)
        self.rejected: set = set()  # packets the decoder rejected, each once however often it is decoded
        self.lead = 0              # how far back seeks had to go to land early enough

    def seek(self, ts: int) -> None:
        self.pending = self.prev = None
        try:
            self.container.seek(int(ts), stream=self.stream, backward=True)
        except av.FFmpegError:
            self.frames = iter(())   # like landing nowhere: the caller seeks elsewhere
            return
        self.frames = self._decode()

    def _decode(self) -> Iterator:
        """Frames from here to the end. A packet the decoder rejects is
        skipped (the picture heals at the next keyframe); a read error ends
        the stream like EOF: past it lies a cut-off or unreadable file."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                self._failed(exc)
                return
            try:
                frames = packet.decode()     # the last, empty packet flushes
            except av.FFmpegError as exc:
                # Seeks decode a GOP again: a packet counts once, by where it lies in the file.
                self.rejected.add((packet.pos, packet.dts, packet.pts))
                self._failed(exc)
                continue
            yield from (f for f in frames if f.pts is not None)

    @property
    def damaged(self) -> int:
        """How many distinct packets the decoder rejected (never more than the file has)."""
        return len(self.rejected)

    def _failed(self, exc) -> None:
        # Frame-threaded decoders drop broken pictures without a word, so this
        # sees read errors and single-threaded decode errors only; cut files
        # are also caught by comparing the headers with the packets.
        if self.error is None:
            at = self.prev.pts if self.prev is not None else None
            self.error = (at, _reason(exc))

    def peek(self):
        if self.pending is None:
            self.pending = next(self.frames, None)
        return self.pending

    def take(self):
        frame, self.pending = self.peek(), None
        if frame is not None:
            self.prev = frame
        return frame

    def seek_before(self, want, ts: int) -> None:
        """Seek so the first decoded frame is at or before ``want``.

        Going back further each time handles seeks that land late (MPEG-TS,
        decode-time indexes); ``lead`` remembers how far it took.
        """
        step = max(self.lead, self.line.ticks(1.0))
        for pos in _retreat(ts - self.lead, self.line.floor, step):
            self.seek(pos)
            first = self.peek()
            if first is not None and first.pts <= want:
                if not self.line.key_pts:    # with an index, a retreat is a one-off
                    self.lead = max(self.lead, ts - pos)
                return

    def reach(self, want, snap: bool = False) -> None:
        """Put the decoder at or before ``want``: keep going inside the same
        GOP, otherwise seek. Demuxers seek by display time (mov too), so
        seeking to ``want`` itself lands on the last keyframe before it.
        ``snap``: the caller wants a keyframe near ``want`` if there is one."""
        if not self._can_continue(want, snap):
            self.seek_before(want, math.floor(want))

    def _can_continue(self, want, snap: bool) -> bool:
        prev, nxt = self.prev, self.pending
        if prev is None or prev.pts >= want:
            return False
        if nxt is not None and nxt.pts >= want:
            return True            # the answer is already decoded
        here = nxt.pts if nxt is not None else prev.pts
        if not self.line.key_pts:
            # No index: a seek here goes back ``lead`` anyway, so decoding
            # on from within that distance costs no more. Unless a keyframe
            # is wanted: only a seek can find one without an index.
            return not snap and want - here <= self.lead
        key = self.line.key_before(want)
        return key is not None and key <= here

    def until(self, want):
        """Decode on to the first frame at or after ``want`` (left pending).
        Returns (the frame before it, that frame); either may be None."""
        before = self.prev
        while (frame := self.peek()) is not None and frame.pts < want:
            before = self.take()
        return before, frame


# ----------------------------------------------------------------- picking

@dataclass(frozen=True)
class _Segment:
    index: int
    low: Fraction     # segment start (inclusive), pts
    target: Fraction  # centre
    high: Fraction    # segment end (exclusive)

    @property
    def window(self) -> tuple[Fraction, Fraction]:
        """A quarter segment either side of the target."""
        q = (self.high - self.low) / 4
        return self.target - q, self.target + q


def _segments(line: _Timeline, n: int) -> Iterator[_Segment]:
    # Exact fractions: a frame at a segment's first tick belongs to it.
    width = Fraction(line.end - line.start, n)
    for i in range(n):
        low = line.start + i * width
        yield _Segment(i, low, low + width / 2, low + width)


def _exact(cursor: _Cursor, seg: _Segment):
    """First frame at or after the target; the last frame if none."""
    cursor.reach(seg.target)
    before, at = cursor.until(seg.target)
    return cursor.take() if at is not None else before


def _fast(cursor: _Cursor, seg: _Segment):
    """A frame within a quarter segment of the target, decoding as little as
    possible; failing that, the frame nearest the target inside the segment."""
    lo, hi = seg.window
    cursor.reach(hi, snap=True)    # a keyframe in the window is the landing frame
    before, at = cursor.until(lo)
    if at is not None and at.pts <= hi:
        return cursor.take()
    inside = [f for f in (before, at) if f is not None and seg.low <= f.pts < seg.high]
    if not inside:
        return None
    best = min(inside, key=lambda f: abs(f.pts - seg.target))
    return cursor.take() if best is at else best


def _around(line: _Timeline, seconds: list[float]) -> Iterator[_Segment]:
    """A segment per target time (seconds from the start, sorted): halfway to the neighbouring targets
    (as far on the open side of the first and last), so a frame stays near its own target."""
    ticks = [line.start + Fraction(s).limit_denominator(10**6) / line.base for s in seconds]
    ticks = [min(max(t, Fraction(line.start)), Fraction(line.end - 1)) for t in ticks]
    for i, target in enumerate(ticks):
        before = (target - ticks[i - 1]) / 2 if i else None
        after = (ticks[i + 1] - target) / 2 if i + 1 < len(ticks) else None
        before, after = before if before is not None else after, after if after is not None else before
        low = max(Fraction(line.start), target - (before or 0))
        yield _Segment(i, low, target, max(target + (after or 0), target + 1))


def _pick(cursor: _Cursor, segments: Iterable[_Segment], mode: str, missed: list[float]) -> Iterator:
    """One frame per segment, in time order, never the same frame twice.
    Targets left without a frame of their own go to ``missed`` (seconds)."""
    choose = _fast if mode == "fast" else _exact
    last = None
    for seg in segments:
        frame = choose(cursor, seg)
        if frame is None or (last is not None and frame.pts <= last):
            missed.append(cursor.line.seconds(seg.target))
            continue
        last = frame.pts
        yield frame


def _every_frame(cursor: _Cursor) -> Iterator:
    """All frames, for clips that have no more than were asked for."""
    cursor.seek(cursor.line.floor)
    last = None
    while (frame := cursor.take()) is not None:
        if last is None or frame.pts > last:
            last = frame.pts
            yield frame


# ------------------------------------------------------------------ output

def _rotation(frame) -> int:
    """Display rotation in degrees counter-clockwise: 0, 90, 180 or 270."""
    return round((frame.rotation or 0) / 90) % 4 * 90


def _to_frame(frame, index: int, line: _Timeline, path: str) -> Frame:
    image = frame.to_ndarray(format="rgb24")
    turns = _rotation(frame) // 90
    if turns:
        image = np.ascontiguousarray(np.rot90(image, turns))
    return Frame(image=image, index=index, pts=frame.pts, seconds=line.seconds(frame.pts), source=path)


def _notes(path: str, line: _Timeline, cursor: _Cursor, n: int, count: int, missed: list[float]) -> list[str]:
    """What the caller should know about frames that could not be returned."""
    if count == 0:
        why = cursor.error[1] if cursor.error else "the decoder gave no picture"
        raise _fail(path, f"no decodable video frames: {why}", _DAMAGED)
    notes = []
    if line.frames is not None and line.frames <= n and count < n:
        notes.append(f"only {count} frame{'s' if count != 1 else ''} in clip, {n} requested")
    elif missed:
        which = ", ".join(f"{t:.1f} s" for t in missed)
        notes.append(f"returned {count} of {n} frames: none of its own near {which} "
                     "(variable frame rate or a gap in the recording)")
    if cursor.error:
        at = f" after {line.seconds(cursor.error[0]):.1f} s" if cursor.error[0] is not None else ""
        if cursor.damaged:
            notes.append(f"{cursor.damaged} damaged packet(s) skipped, the first{at}: {cursor.error[1]} "
                         "(the file is damaged; pictures near it may be missing or smeared)")
        else:
            notes.append(f"reading stopped{at}: {cursor.error[1]} "
                         "(the file is damaged or cut; frames past it are missing)")
    if line.header_end and line.header_end - line.end > max(line.ticks(1.0), (line.header_end - line.start) // 20):
        notes.append(f"the video stops at {line.duration:.1f} s but its header says "
                     f"{float((line.header_end - line.start) * line.base):.1f} s (truncated file?)")
    return notes


# ------------------------------------------------------------------ public

def probe(path: str) -> VideoInfo:
    """Describe a video without decoding more than its first frame."""
    path = str(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        rotation = _first_rotation(container, stream, path)
        line = _timeline(container, stream, path)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation % 180:
            width, height = height, width
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (line.frames / line.duration if line.frames and line.duration else 0.0)
        return VideoInfo(path=path, duration=line.duration, start=float(line.start * line.base),
                         width=width, height=height, fps=fps, frame_count=line.frames,
                         codec=stream.codec_context.name, rotation=rotation)


def _first_rotation(container, stream, path: str) -> int:
    # Newer FFmpeg keeps the display matrix on frames, not stream metadata.
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError as exc:
        raise _fail(path, f"no decodable video frames: {_reason(exc)}", _DAMAGED) from None
    if frame is None:
        raise _fail(path, "no decodable video frames", _DAMAGED)
    return _rotation(frame)


def targets(start: float, duration: float, n: int) -> list[float]:
    """Centres of n equal segments: t_i = start + (i + 1/2)·D/n."""
    return [start + (i + 0.5) * duration / n for i in range(n)]


def sample(path: str, n: int, mode: str = "fast", notes: list | None = None) -> Iterator[Frame]:
    """Yield up to n frames in time order; appends human-readable notes
    (e.g. "only 3 frames in clip, 8 requested") to ``notes`` when given.

    ``mode`` is "fast" (a frame within a quarter segment of each target,
    preferring keyframes) or "exact" (the first frame at or after each
    target). Bad arguments raise ValueError at once; problems with the file
    raise MediaError when iteration starts.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    return _sample(str(path), n, mode, notes if notes is not None else [])


def _sample(path: str, n: int, mode: str, notes: list) -> Iterator[Frame]:
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        line = _timeline(container, stream, path)
        cursor, missed = _Cursor(container, stream, line), []
        short = line.frames is not None and line.frames <= n
        picked = _every_frame(cursor) if short else _pick(cursor, _segments(line, n), mode, missed)
        count = 0
        for count, frame in enumerate(picked, 1):
            yield _to_frame(frame, count - 1, line, path)
        notes.extend(_notes(path, line, cursor, n, count, missed))


def sample_at(path: str, seconds: list[float], mode: str = "exact", notes: list | None = None) -> Iterator[Frame]:
    """Yield a frame for each of the given times (seconds from the recording's start), in time order.

    For frames chosen where the activity is (a timeline segment, ``describe.frames_by = "activity"``):
    ``exact`` takes the first frame at or after each time, ``fast`` any frame within a quarter of the way
    to the neighbouring times. Times that get no frame of their own are left out with a note.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not seconds:
        raise ValueError("no times given")
    return _sample_at(str(path), sorted(float(s) for s in seconds), mode, notes if notes is not None else [])


def _sample_at(path: str, seconds: list[float], mode: str, notes: list) -> Iterator[Frame]:
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        line = _timeline(container, stream, path)
        cursor, missed = _Cursor(container, stream, line), []
        count = 0
        for count, frame in enumerate(_pick(cursor, _around(line, seconds), mode, missed), 1):
            yield _to_frame(frame, count - 1, line, path)
        notes.extend(_notes(path, line, cursor, len(seconds), count, missed))


@contextmanager
def open_video(path: str):
    """``(container, stream)`` of a recording's first video stream, for a pass of one's own over its
    packets (``activity``); the same checks and one-line errors as ``sample``."""
    path = str(path)
    with _open(path) as container:
        yield container, _video_stream(container, path)


# The largest decoded photo by default (describe.max_image_megapixels): 50 megapixels. A PNG decodes at
# full size and peaks near 6 bytes a pixel (grey → BGR → RGB), about 300 MB at the limit; a JPEG counts
# at the reduced size it is decoded at.
MAX_PIXELS = 50_000_000
# cv2's reduced JPEG decodes, largest reduction first.
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def load_images(paths: Iterable[str], *, side: int = 0, max_pixels: int = MAX_PIXELS) -> Iterator[Frame]:
    """Yield each image as an upright RGB Frame (EXIF orientation applied). ``side``: the smallest
    longer side that is still enough (the encoder's input), which lets a large JPEG decode at reduced
    size; ``max_pixels``: larger images are refused before they are decoded."""
    for index, path in enumerate(paths):
        yield Frame(image=_read_image(str(path), side, max_pixels), index=index, pts=None, seconds=0.0,
                    source=str(path))


def _read_image(path: str, side: int = 0, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    _check_file(path)
    try:
        header = imagesize.size(path)
        data = np.fromfile(path, np.uint8) if header else None
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror}", "check the file and its permissions") from None
    if header is None:
        raise _fail(path, "not a readable image", "the file is damaged or not a JPEG, PNG, BMP, WebP or TIFF "
                    "image; open it in a viewer to check")
    kind, width, height = header
    factor, flags = _decode_flags(kind, max(width, height), side)
    if (width // factor) * (height // factor) > max_pixels:
        scaled = f" even at 1/{factor} size" if factor > 1 else ""
        raise _fail(path, f"the image is {width}×{height} ({width * height / 1e6:.0f} megapixels{scaled}), more "
                    f"than describe.max_image_megapixels = {max_pixels / 1e6:g}",
                    "scale it down first, or raise describe.max_image_megapixels")
    # IMREAD_COLOR (and its reduced forms) turns the picture by its EXIF orientation and makes grey
    # or transparent images 3-channel.
    image = cv2.imdecode(data, flags)
    if image is None:
        raise _fail(path, "not a readable image", "the file is damaged or not an image; open it in a viewer to check")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)      # in place: no second full-size copy


def _decode_flags(kind: str, longest: int, side: int) -> tuple[int, int]:
    """(factor, cv2 flags): the largest reduced JPEG decode that keeps the longer side at ``side`` or
    more; full size (factor 1) otherwise."""
    if kind == imagesize.JPEG and side > 0:
        for factor, flag in _REDUCED:
            if longest // factor >= side:
                return factor, flag
    return 1, cv2.IMREAD_COLOR


THUMBNAIL_WIDTH = 320
THUMBNAIL_QUALITY = 80


def thumbnail(image: np.ndarray, width: int = THUMBNAIL_WIDTH) -> bytes:
    """A small JPEG of an RGB frame (``width`` pixels wide at most, aspect kept): what the web page
    shows of the frames the model saw. A frame no wider than ``width`` keeps its size."""
    height, full = image.shape[:2]
    if full > width:
        image = cv2.resize(image, (width, max(1, round(height * width / full))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY,
                                                                          THUMBNAIL_QUALITY])
    if not ok:
        raise MediaError(f"cannot encode a {full}×{height} frame as JPEG (OpenCV refused it)")
    return data.tobytes()
