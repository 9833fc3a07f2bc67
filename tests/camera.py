"""Camera-like recordings with a known truth, for the timeline tests and benchmarks/timeline.py.

What a fixed security camera records, made with PyAV: a textured static scene,
sensor noise on every frame, a slow lighting drift, objects that cross the
picture at known times (small or large), optionally a whole-picture brightness
switch that stays (lights on, the IR cut filter at dusk) and rain-like flicker
(scattered bright streaks that change every frame). The pictures are built in
the YUV planes the encoder takes, so a 10-minute 1080p clip is made in minutes.

``make(path, Scene(...))`` writes the file; ``Scene.truth(step)`` lists the
seconds in which an object is visible (the ground truth for recall/precision).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


@dataclass(frozen=True)
class Crossing:
    """An object crossing the picture from left to right between ``start`` and ``end`` seconds."""
    start: float
    end: float
    size: float = 0.2           # height as a fraction of the picture's height (width is 0.6 × that)
    row: float = 0.5            # vertical centre as a fraction of the height
    luma: int = 40              # its brightness (0–255): dark against the mid-grey scene

    def box(self, t: float, w: int, h: int) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) at ``t``, clipped to the picture, or None when it is not visible."""
        if not self.start <= t < self.end:
            return None
        bh = max(2, round(self.size * h))
        bw = max(2, round(0.6 * self.size * h))
        x = round(-bw + (w + bw) * (t - self.start) / (self.end - self.start))
        y = round(self.row * h - bh / 2)
        x0, x1, y0, y1 = max(0, x), min(w, x + bw), max(0, y), min(h, y + bh)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@dataclass(frozen=True)
class Scene:
    seconds: float = 20.0
    fps: float = 10.0
    size: tuple[int, int] = (160, 96)       # (w, h), even numbers
    gop: float = 2.0                        # seconds between keyframes
    crossings: tuple = ()
    switch_at: float | None = None          # a whole-picture brightness change that stays
    switch_luma: int = 45                   # how much brighter the picture is after it
    flicker: tuple | None = None            # (start, end) seconds of rain-like streaks
    noise: float = 1.0                      # sensor noise, standard deviation in luma levels
    drift: float = 0.05                     # lighting drift: ± this fraction of brightness …
    drift_period: float = 300.0             # … over this many seconds
    codec: str = "libx264"
    preset: str = "veryfast"
    bframes: int = 0
    vfr: bool = False                       # the second half at a quarter of the frame rate
    seed: int = 0
    options: dict = field(default_factory=dict)

    def truth(self, step: float = 1.0) -> np.ndarray:
        """Per ``step``-second bin: True when an object is visible at any moment of it."""
        bins = math.ceil(self.seconds / step)
        active = np.zeros(bins, bool)
        for c in self.crossings:
            first, last = int(c.start // step), min(bins - 1, int(math.ceil(c.end / step)) - 1)
            active[first:last + 1] = True
        return active


def _texture(w: int, h: int, rng) -> np.ndarray:
    """A static scene: large soft shapes plus fine detail, mid-grey on average."""
    coarse = rng.integers(60, 200, (max(2, h // 24), max(2, w // 24)), dtype=np.uint8)
    scene = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    fine = cv2.resize(rng.integers(-12, 13, (h // 2, w // 2), dtype=np.int16).astype(np.float32), (w, h))
    return np.clip(scene + fine.astype(np.int16), 16, 235).astype(np.int16)


class _Noise:
    """Sensor noise from a bank of precomputed fields, shifted at random so no two frames repeat."""

    def __init__(self, w: int, h: int, sigma: float, rng):
        self.rng = rng
        self.bank = [np.round(rng.normal(0, sigma, (h + 8, w + 8))).astype(np.int16) for _ in range(6)]
        self.w, self.h = w, h

    def next(self) -> np.ndarray:
        field_ = self.bank[self.rng.integers(len(self.bank))]
        dy, dx = self.rng.integers(0, 8, 2)
        return field_[dy:dy + self.h, dx:dx + self.w]


def _streaks(luma: np.ndarray, rng) -> None:
    """Rain-like flicker: short bright vertical streaks at random places, new every frame."""
    h, w = luma.shape
    n = max(4, w * h // 4000)
    xs, ys = rng.integers(0, w, n), rng.integers(0, max(1, h - h // 12), n)
    for x, y in zip(xs, ys):
        luma[y:y + max(2, h // 12), x] += 50


def _times(scene: Scene, preroll: int) -> list:
    """Presentation times: ``preroll`` frames before 0, then to the end (VFR slows to fps/4 half-way)."""
    times = [(k - preroll) / scene.fps for k in range(preroll)]
    t = 0.0
    while t < scene.seconds - 1e-9:
        times.append(round(t, 6))
        t += 4 / scene.fps if scene.vfr and t >= scene.seconds / 2 else 1 / scene.fps
    return times


def frames(scene: Scene, preroll: int = 0):
    """(seconds, Y, U, V) for every frame, after ``preroll`` frames of the empty scene; uint8 planes."""
    w, h = scene.size
    rng = np.random.default_rng(scene.seed)
    base = _texture(w, h, rng)
    noise = _Noise(w, h, scene.noise, rng)
    chroma = np.full((h // 2, w // 2), 128, np.uint8)
    skins = [np.clip(c.luma + rng.integers(-25, 26, (h, w // 2 + 2), dtype=np.int16), 0, 255) for c in scene.crossings]
    lit: dict = {}          # the scene at each brightness (drift moves in steps of 0.1 %)
    for n, when in enumerate(_times(scene, preroll), -preroll):
        t = max(0.0, when)
        gain = round(1.0 + scene.drift * math.sin(2 * math.pi * t / scene.drift_period), 3)
        if gain not in lit:
            lit = {gain: (base * gain).astype(np.int16)}
        luma = lit[gain] + noise.next()
        if scene.switch_at is not None and t >= scene.switch_at:
            luma += scene.switch_luma
        if scene.flicker and scene.flicker[0] <= t < scene.flicker[1]:
            _streaks(luma, rng)
        for c, skin in zip(scene.crossings, skins):
            box = c.box(t, w, h)
            if box:
                x0, y0, x1, y1 = box
                # A textured body whose pattern shifts every frame, like limbs or wheels moving.
                rolled = np.roll(skin, n, axis=0)
                luma[y0:y1, x0:x1] = rolled[:y1 - y0, :x1 - x0] + noise.next()[y0:y1, x0:x1] // 2
        yield when, np.clip(luma, 0, 255).astype(np.uint8), chroma, chroma


def make(path, scene: Scene) -> Path:
    """Encode ``scene`` into ``path`` (the suffix picks the container) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = scene.size
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as out:
        rate = Fraction(scene.fps).limit_denominator(1001)
        stream = out.add_stream(scene.codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        gop = str(max(1, round(scene.gop * scene.fps)))
        if scene.codec == "libx264":
            stream.options = {"g": gop, "keyint_min": gop, "sc_threshold": "0", "preset": scene.preset,
                              "bf": str(scene.bframes), "threads": "2", **scene.options}
        elif scene.codec == "mjpeg":
            stream.pix_fmt = "yuvj420p"
            stream.options = dict(scene.options)
        else:
            stream.options = {"g": gop, **scene.options}
        # A camera's encoder runs long before a recording starts: the first GOP is encoded and
        # dropped, so the file does not begin with the encoder's warm-up.
        preroll = round(scene.gop * scene.fps) if scene.codec == "libx264" else 0
        base = Fraction(1, 1000) if scene.vfr else 1 / rate
        stream.codec_context.time_base = base
        for t, y, u, v in frames(scene, preroll):
            frame = av.VideoFrame(w, h, stream.pix_fmt)
            for plane, data in zip(frame.planes, (y, u, v)):
                _copy_plane(plane, data)
            frame.pts, frame.time_base = round((t + preroll / scene.fps) / base), base
            _mux(out, stream.encode(frame), preroll / scene.fps)
        _mux(out, stream.encode(None), preroll / scene.fps)
    return path


def _mux(out, packets, preroll: float) -> None:
    """Mux the packets after ``preroll`` seconds, their timestamps moved back by it."""
    for packet in packets:
        shift = round(preroll / packet.time_base)
        if packet.pts is not None and packet.pts < shift:
            continue
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        out.mux(packet)


def _copy_plane(plane, data: np.ndarray) -> None:
    """Write ``data`` into a frame plane whose rows may be padded (line_size ≥ width)."""
    rows, cols = data.shape
    view = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
    view[:rows, :cols] = data


# ------------------------------------------------------- session cache

_made: dict = {}


def cached(name: str, scene: Scene, folder: Path) -> Path:
    """``make`` once per test session for the same name and scene (``folder``: a session temp dir)."""
    key = (name, repr(scene))
    if key not in _made:
        _made[key] = make(Path(folder) / f"s{len(_made)}" / name, scene)
    return _made[key]
