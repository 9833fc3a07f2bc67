"""What every vision runtime shares: the Encoder protocol, its result and its error.

Why a module of its own: the runtimes (``onnxrt``, ``rknn``) and the pool
import these names, and the package's ``__init__`` imports the runtimes only
when a file of theirs is opened. Keeping the shared names here lets every
arrow point one way — runtime → base, package → base — so no runtime ever
imports the package that chooses it.

``check_encoder`` lives here too because it is the one check every runtime
relies on: a wrong token count or width does not fail later, it produces
fluent, wrong text. Tokens and width are always read from the encoder's real
outputs. The input side is compared only where the runtime can report it
(ONNX Runtime); RKNNLite cannot, and whether it refuses a buffer of the wrong
size is unknown (docs/board.md, "Vision encoder (RKNNLite)"), so there the
token count is what exposes a wrong ``model.input_size``: a mismatch names
both keys, and the side that gives the encoder's count when the family's
patch arithmetic is known.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .. import assemble
from ..errors import RuntimeFailure
from ..media import Frame


class VisionError(RuntimeFailure):
    """An encoder could not be loaded or failed on a frame; the message names both."""


class Encoder(Protocol):
    """One encoder instance. The pool drives each instance from one thread at a time."""
    path: str                 # the model file, for error messages
    normalize: str            # "encoder" (feed uint8 NHWC) or "host" (feed normalised float32 NCHW)
    input_size: int | None    # square input side read from the model; None when the runtime cannot tell
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
    """(T, D) of ``encoder``, checked against ``profile``; VisionError names the key to fix."""
    shapes = [tuple(s) for s in encoder.output_shapes]
    if not shapes:
        raise VisionError(f"{encoder.path}: the encoder reports no outputs")
    try:
        pairs = [assemble.token_width(s) for s in shapes]
    except assemble.ShapeError as exc:
        raise VisionError(f"{encoder.path}: {exc}") from None
    if len(set(pairs)) != 1:
        raise VisionError(f"{encoder.path}: outputs disagree on tokens × width: {shapes}")
    tokens, width = pairs[0]
    facts = [
        ("encoder_outputs", len(shapes), profile.encoder_outputs, "outputs"),
        ("input_size", encoder.input_size, profile.input_size, "input side"),
        ("embed_width", width, profile.embed_width, "floats per token per output"),
    ]
    for key, got, want, what in facts:
        if got is not None and got != want:
            raise VisionError(
                f"{encoder.path}: the encoder has {got} {what}, profile {profile.name} says {want} "
                f"(output shapes {shapes}; set model.{key} = {got} in config.toml if this encoder is right, "
                f"or use the encoder that matches the profile)")
    if tokens != profile.tokens_per_image:
        raise VisionError(_tokens_mismatch(encoder, profile, tokens, shapes))
    fitting = profile.side_for(tokens)
    if encoder.input_size is None and fitting not in (None, profile.input_size):
        raise VisionError(
            f"{encoder.path}: the encoder gives {tokens} tokens per image, which for {profile.family} means a "
            f"{fitting}×{fitting} input, but model.input_size is {profile.input_size} (profile {profile.name}): "
            f"set model.input_size = {fitting} in config.toml, or use the encoder that matches the profile")
    return tokens, width


def _tokens_mismatch(encoder: Encoder, profile, tokens: int, shapes: list) -> str:
    """Tokens per image depend on the input side: name model.input_size beside model.tokens_per_image."""
    side = profile.input_size
    head = (f"{encoder.path}: the encoder gives {tokens} tokens per image, profile {profile.name} says "
            f"{profile.tokens_per_image} for a {side}×{side} input (output shapes {shapes}); ")
    fitting = profile.side_for(tokens)
    if fitting == side:
        return head + (f"{tokens} tokens is what model.input_size = {side} gives: set model.tokens_per_image = "
                       f"{tokens} in config.toml, or use the encoder that matches the profile")
    if fitting is not None:
        return head + (f"{tokens} tokens is what a {fitting}×{fitting} input gives: if the encoder was "
                       f"converted for that size, set model.input_size = {fitting} and model.tokens_per_image "
                       f"= {tokens} in config.toml, or use the encoder that matches the profile")
    return head + (f"check model.input_size ({side}) against the size the encoder was converted for, then set "
                   f"model.tokens_per_image = {tokens} in config.toml if this encoder is right, or use the "
                   f"encoder that matches the profile")
