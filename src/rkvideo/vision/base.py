"""What every vision runtime shares: the Encoder protocol, its result and its error.

Why a module of its own: the runtimes (``onnxrt``, ``rknn``) and the pool
import these names, and the package's ``__init__`` imports the runtimes only
when a file of theirs is opened. Keeping the shared names here lets every
arrow point one way — runtime → base, package → base — so no runtime ever
imports the package that chooses it.

``check_encoder`` lives here too because it is the one check every runtime
relies on: a wrong token count or width does not fail later, it produces
fluent, wrong text. What it finds is wrong with the model file or its
settings, so it raises ``ModelFileError`` (a usage error: a restart cannot
help), while ``VisionError`` stays for what fails while running.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .. import assemble
from ..errors import RuntimeFailure
from ..media import Frame
from ..modelfile import ModelFileError


class VisionError(RuntimeFailure):
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


class Vision(Protocol):
    """What the pipeline drives: a ``VisionPool``, or a test's stand-in for the whole stage."""
    output_width: int         # E: floats per vision token the LLM receives

    def encode(self, frames: Iterable[Frame], on_frame: Callable[[Frame], None] | None = None) -> Encoded:
        """Every frame's embeddings, in the order the frames were given."""

    def close(self) -> None:
        """Release every encoder; safe to call twice."""


def check_encoder(encoder: Encoder, profile) -> tuple[int, int]:
    """(T, D) of ``encoder``, checked against ``profile``; ModelFileError names the key to fix."""
    shapes = [tuple(s) for s in encoder.output_shapes]
    if not shapes:
        raise ModelFileError(f"{encoder.path}: the encoder reports no outputs")
    try:
        pairs = [assemble.token_width(s) for s in shapes]
    except assemble.ShapeError as exc:
        raise ModelFileError(f"{encoder.path}: {exc}") from None
    if len(set(pairs)) != 1:
        raise ModelFileError(f"{encoder.path}: outputs disagree on tokens × width: {shapes}")
    tokens, width = pairs[0]
    facts = [
        ("encoder_outputs", len(shapes), profile.encoder_outputs, "outputs"),
        ("tokens_per_image", tokens, profile.tokens_per_image, "tokens per image"),
        ("embed_width", width, profile.embed_width, "floats per token per output"),
        ("input_size", encoder.input_size, profile.input_size, "input side"),
    ]
    for key, got, want, what in facts:
        if got != want:
            raise ModelFileError(
                f"{encoder.path}: the encoder has {got} {what}, profile {profile.name} says {want} "
                f"(output shapes {shapes}; set model.{key} = {got} in config.toml if this encoder is right, "
                f"or use the encoder that matches the profile)")
    return tokens, width
