"""How much memory does a large photo cost, now that its size is read first (issue 9, item 11)?

Usage:  python benchmarks/images.py [--old]

Each case runs in a fresh Python process that loads one image the way ``rkvideo describe`` does
(``media.load_images`` with the encoder side 448) and reports its peak RSS (``ru_maxrss``). Printed:
peak MiB and the ratio to the baseline, a 2000×2000 PNG loaded in the same run. ``--old`` adds the
way photos were loaded before (``cv2.imdecode(..., IMREAD_COLOR)`` at full size, then RGB) for the
large files: the 20000×20000 PNG then needs about 2.4 GB.

Images are generated into benchmarks/.cache/images/ once (the 20000×20000 PNG is written row by
row: a 1 MB file).
"""
from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache" / "images"

LOAD = textwrap.dedent("""
    import json, resource, sys, time
    import cv2, numpy as np
    from rkvideo import media
    start = time.perf_counter()
    try:
        if sys.argv[2] == "old":
            image = cv2.cvtColor(cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            result = "x".join(map(str, image.shape))
        else:
            [frame] = media.load_images([sys.argv[1]], side=448)
            result = "x".join(map(str, frame.image.shape))
    except media.MediaError as exc:
        result = "refused"
    print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "result": result,
                      "seconds": time.perf_counter() - start}))
""")


def grey_png(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = bytes(1 + width)
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def photo(path: Path, width: int, height: int, suffix: str) -> Path:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (height // 50, width // 50, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    path.write_bytes(cv2.imencode(suffix, image)[1].tobytes())
    return path


def files() -> dict:
    CACHE.mkdir(parents=True, exist_ok=True)
    made = {"2000×2000 PNG (baseline)": (CACHE / "base.png", lambda p: photo(p, 2000, 2000, ".png")),
            "8000×6000 JPEG": (CACHE / "big.jpg", lambda p: photo(p, 8000, 6000, ".jpg")),
            "7000×7000 PNG (49 MP, under the limit)": (CACHE / "49mp.png", lambda p: grey_png(p, 7000, 7000)),
            "20000×20000 PNG (400 MP)": (CACHE / "huge.png", lambda p: grey_png(p, 20000, 20000))}
    out = {}
    for name, (path, make) in made.items():
        if not path.exists():
            make(path)
        out[name] = path
    return out


def measure(path: Path, how: str) -> dict:
    done = subprocess.run([sys.executable, "-c", LOAD, str(path), how], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", action="store_true", help="also measure the full-size decode used before")
    args = parser.parse_args()
    t0 = time.perf_counter()
    paths = files()
    print(f"images ready in {time.perf_counter() - t0:.1f}s: "
          + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in paths.values()))
    base = None
    print(f"{'image':<40} {'how':<8} {'result':<12} {'peak MiB':>9} {'× baseline':>11} {'s':>6}")
    for name, path in paths.items():
        for how in ("rkvideo", "old") if args.old and "baseline" not in name else ("rkvideo",):
            got = measure(path, how)
            base = base or got["peak_kib"]
            print(f"{name:<40} {how:<8} {got['result']:<12} {got['peak_kib'] / 1024:>9.1f} "
                  f"{got['peak_kib'] / base:>11.2f} {got['seconds']:>6.2f}")


if __name__ == "__main__":
    main()
