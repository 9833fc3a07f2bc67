"""A cheap content hash, so that a copy of a recording under another name is described once.

Why sampled, not a full hash: a full sha256 of a 2 GB recording on an SD card
takes a minute, and the daemon fingerprints every file it queues.
"""
from __future__ import annotations

import hashlib
import os

# Small files are hashed whole, larger ones in blocks.
BLOCK = 1 << 20          # first and last MiB: container headers and indexes live there
PROBES = 16              # evenly spread 64 KiB samples in between
PROBE = 64 << 10


def fingerprint(path: str | os.PathLike) -> str:
    """A cheap content hash: sha256 over the size, the first and last MiB and 16 × 64 KiB between.

    Files up to 4 MiB are hashed whole. For larger files this reads at most
    3 MiB however long the recording is. It is safe for camera recordings
    because their container index (MP4 ``moov``, MKV cues, AVI ``idx1``) sits
    in the first or last MiB and lists every frame's size and offset, so two
    recordings of the same length that differ in any frame almost always
    differ there too, and the spread samples catch formats without an index
    (MPEG-TS). Limit: an in-place edit that keeps the file size and touches
    only bytes outside the sampled ranges is not seen (cameras do not produce
    those).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.sha256(f"rkvideo-fingerprint-1:{size}:".encode())
        if size <= 4 * BLOCK:
            digest.update(f.read())
            return digest.hexdigest()
        digest.update(f.read(BLOCK))
        span = size - 2 * BLOCK - PROBE
        for k in range(PROBES):
            f.seek(BLOCK + span * k // (PROBES - 1))
            digest.update(f.read(PROBE))
        f.seek(size - BLOCK)
        digest.update(f.read(BLOCK))
    return digest.hexdigest()
