"""Media in, frames out.

INTERFACE (implementation in progress): the rest of rkvideo relies only on
the names below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".ts")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class MediaError(ValueError):
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
    width: int
    height: int
    fps: float
    frame_count: int | None
    codec: str
    rotation: int


def probe(path: str) -> VideoInfo:
    raise NotImplementedError


def targets(start: float, duration: float, n: int) -> list[float]:
    """Centres of n equal segments: t_i = start + (i + 1/2)·D/n."""
    return [start + (i + 0.5) * duration / n for i in range(n)]


def sample(path: str, n: int, mode: str = "fast", notes: list | None = None) -> Iterator[Frame]:
    """Yield up to n frames in time order; appends human-readable notes
    (e.g. "only 3 frames in clip, 8 requested") to ``notes`` when given."""
    raise NotImplementedError


def load_images(paths: list[str]) -> Iterator[Frame]:
    raise NotImplementedError
