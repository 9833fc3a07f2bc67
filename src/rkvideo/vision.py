"""Frames to vision embeddings.

INTERFACE (implementation in progress). The pipeline relies only on these names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np

from .video import Frame


class VisionError(RuntimeError):
    """An encoder could not be loaded or failed on a frame; the message names both."""


class Encoder(Protocol):
    """One encoder instance. The pool drives each instance from one thread at a time."""
    path: str                 # the model file, for error messages
    normalize: str            # "encoder" (feed uint8 NHWC) or "host" (feed normalised float32 NCHW)
    input_size: int           # square input side, read from the model
    output_shapes: list       # one shape per output, read from the model

    def run(self, tensor: np.ndarray) -> list:
        """Raw outputs for one preprocessed frame; raises VisionError on a runtime error code."""

    def close(self) -> None:
        """Release the instance; safe to call twice."""


@dataclass
class Encoded:
    frames: list              # the Frame objects, in index order (images kept)
    embeddings: np.ndarray    # (N, T, E) float32, C-contiguous
    timings: dict = field(default_factory=dict)   # seconds: decode, preprocess, encode, vision (wall)


class VisionPool:
    def __init__(self, encoders: list, profile, queue_size: int = 4):
        raise NotImplementedError

    @property
    def output_width(self) -> int:
        """E: floats per vision token after combining outputs."""
        raise NotImplementedError

    def encode(self, frames: Iterable[Frame], on_frame: Callable[[Frame], None] | None = None) -> Encoded:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def open_pool(path: str, profile, workers: int, queue_size: int = 4) -> VisionPool:
    """Load ``workers`` encoder instances of ``path`` (runtime chosen by suffix) into a pool."""
    raise NotImplementedError
