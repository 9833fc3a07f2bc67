"""How fast does rkvideo pick N frames, and how far from the targets are they?

Usage:  python benchmarks/sampling.py [--repeat 2] [--counts 8 20]

Makes (once, cached under benchmarks/.cache/) a 2-minute 1080p H.264 clip at
30 fps with a 250-frame GOP, then times, in one run on the same file:

* rkvideo ``fast`` and ``exact`` (``rkvideo.media.sample``);
* a decode-everything baseline (PyAV decodes every frame, keeps the first
  frame at or after each target);
* OpenCV seeking with ``CAP_PROP_POS_MSEC`` and reading one frame.

Each frame's true position is read from a frame number drawn into the
picture, so a method that returns the wrong frame cannot hide it. Wall time,
CPU time (all threads of this process), ratios and each method's largest
distance from its target are printed. Compare ratios: absolute times depend
on the machine and on whatever else it is running.
"""
from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from rkvideo import media

CACHE = Path(__file__).resolve().parent / ".cache"
SECONDS, FPS, GOP, SIZE = 120, 30, 250, (1920, 1080)
BITS = 12                       # frame numbers up to 4095
CELL = SIZE[0] // BITS          # width of one bit in the stripe
STRIPE = 64                     # stripe height in pixels


# ------------------------------------------------------------------ the clip

def _texture(rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour texture, twice the frame width so it can scroll."""
    w, h = SIZE
    small = rng.integers(0, 256, (h // 16, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (2 * w, h), interpolation=cv2.INTER_CUBIC)


def _picture(texture: np.ndarray, number: int) -> np.ndarray:
    """A scrolling texture with a moving box and the frame number in a stripe."""
    w, h = SIZE
    shift = (number * 6) % w
    img = texture[:, shift:shift + w].copy()
    x = (number * 11) % (w - 200)
    img[400:600, x:x + 200] = (240, 240, 240)
    for bit in range(BITS):
        on = (number >> (BITS - 1 - bit)) & 1
        img[h - STRIPE:, bit * CELL:(bit + 1) * CELL] = 255 if on else 0
    return img


def read_number(rgb: np.ndarray) -> int:
    """The frame number drawn by ``_picture``."""
    h = rgb.shape[0]
    row = rgb[h - STRIPE // 2, :, :].mean(axis=1)
    bits = ["1" if row[b * CELL + CELL // 2] > 128 else "0" for b in range(BITS)]
    return int("".join(bits), 2)


def make_clip() -> Path:
    path = CACHE / f"clip-{SIZE[1]}p{FPS}-gop{GOP}-{SECONDS}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part.mp4")
    print(f"making {path.name} (once; about a minute or two)...", file=sys.stderr)
    texture = _texture(np.random.default_rng(0))
    with av.open(str(partial), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        # Frame threads: one slice per picture, as cameras and phones write.
        # (PyAV's default, slice threads, makes x264 cut every picture into
        # slices, which flatters slice-threaded decoding.)
        stream.thread_type = "FRAME"
        stream.options = {"g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0",
                          "preset": "veryfast", "crf": "23"}
        for number in range(SECONDS * FPS):
            frame = av.VideoFrame.from_ndarray(_picture(texture, number), format="rgb24")
            frame.pts = number
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    partial.rename(path)
    return path


# ------------------------------------------------------------------ methods
# Each returns the frame numbers it got, read from the pictures.

def rkvideo_mode(mode: str):
    def run(path: Path, n: int) -> list[int]:
        return [read_number(f.image) for f in media.sample(str(path), n, mode)]
    run.__name__ = f"rkvideo {mode}"
    return run


def decode_everything(path: Path, n: int) -> list[int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start, base = stream.start_time or 0, stream.time_base
        wanted = [start + Fraction(t) / base for t in media.targets(0.0, SECONDS, n)]
        got = []
        for frame in container.decode(stream):
            if len(got) < n and frame.pts >= wanted[len(got)]:
                got.append(read_number(frame.to_ndarray(format="rgb24")))
        return got


def opencv_seek(path: Path, n: int) -> list[int]:
    cap = cv2.VideoCapture(str(path))
    try:
        got = []
        for t in media.targets(0.0, SECONDS, n):
            cap.set(cv2.CAP_PROP_POS_MSEC, t * 1000)
            ok, bgr = cap.read()
            if ok:
                got.append(read_number(bgr[..., ::-1]))
        return got
    finally:
        cap.release()


METHODS = [rkvideo_mode("fast"), rkvideo_mode("exact"), decode_everything, opencv_seek]


# ------------------------------------------------------------------ measuring

def measure(method, path: Path, n: int, repeat: int) -> dict:
    """Best of ``repeat`` runs (least disturbed by other jobs)."""
    best = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        numbers = method(path, n)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best["wall"]:
            best = {"wall": wall, "cpu": cpu, "numbers": numbers}
    targets = media.targets(0.0, SECONDS, n)
    got = best["numbers"]
    best["frames"] = len(got)
    best["error"] = max((abs(k / FPS - t) for k, t in zip(got, targets)), default=float("nan"))
    return best


def table(results: dict, counts: list[int]) -> str:
    head = (f"{'method':<18}{'N':>4}{'frames':>8}{'wall s':>9}{'CPU s':>9}"
            f"{'wall/OpenCV':>13}{'CPU/OpenCV':>12}{'all/this':>10}{'max |Δt| s':>12}")
    lines = [head, "-" * len(head)]
    for n in counts:
        cv, everything = results[("opencv_seek", n)], results[("decode_everything", n)]
        for method in METHODS:
            r = results[(method.__name__, n)]
            lines.append(
                f"{method.__name__:<18}{n:>4}{r['frames']:>8}{r['wall']:>9.2f}{r['cpu']:>9.2f}"
                f"{r['wall'] / cv['wall']:>13.2f}{r['cpu'] / cv['cpu']:>12.2f}"
                f"{everything['wall'] / r['wall']:>10.1f}{r['error']:>12.3f}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per method; the fastest is shown")
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 20], help="frames to sample")
    args = parser.parse_args(argv)
    path = make_clip()
    print(f"clip: {path.name}, {path.stat().st_size / 1e6:.0f} MB; PyAV {av.__version__}, OpenCV {cv2.__version__}")
    results = {}
    for n in args.counts:
        for method in METHODS:
            results[(method.__name__, n)] = measure(method, path, n, args.repeat)
    print(table(results, args.counts))
    print("wall/OpenCV, CPU/OpenCV: time relative to OpenCV seeking (lower is better);\n"
          "all/this: how many times faster than decoding everything (wall);\n"
          "max |Δt|: largest distance between a returned frame and its target.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
