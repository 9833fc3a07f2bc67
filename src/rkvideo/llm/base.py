"""What every LLM runtime shares: the LLM protocol, its result, its errors.

Why a module of its own: the runtimes (``llamacpp``, ``rkllm``) import these
names, and the package's ``__init__`` imports the runtimes only when a file
of theirs is opened. With the shared names here every arrow points one way —
runtime → base, package → base — and no runtime imports the package that
chooses it.

The protocol states every capability the pipeline uses as a required member
(``placeholder_rule``, ``input_width``, ``generate_text``, ``abort``), so the
pipeline never has to probe a runtime with ``getattr`` or ``hasattr``.
"""
from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .. import errors

# What a missing or broken portable-path package (onnxruntime, llama-cpp-python, onnx...) asks for.
CPU_EXTRA_HINT = "install the [cpu] extra: pip install 'rkvideo[cpu]'"


class LLMError(errors.RuntimeFailure):
    """The LLM runtime failed (load, a return code, an error state); the message names the file."""


class Interrupted(errors.Interrupted):
    """Generation was stopped (Ctrl-C, SIGTERM); partial text is in ``.generation``."""
    def __init__(self, generation=None):
        super().__init__("generation interrupted")
        self.generation = generation


@dataclass
class Generation:
    text: str
    prompt_tokens: int        # tokens prefilled, vision included
    new_tokens: int
    timings: dict = field(default_factory=dict)   # seconds: prefill, generate
    stop: str = "eos"         # "eos", "length" or "abort"


class Utf8Stream:
    """Runtimes hand out text as bytes per token, and a character may span two tokens: decode
    incrementally, and turn invalid bytes into U+FFFD instead of failing."""

    def __init__(self):
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self.decoder.decode(piece)

    def flush(self) -> str:
        return self.decoder.decode(b"", final=True)


class LLM(Protocol):
    """One loaded model; ``generate`` runs one request at a time."""
    path: str
    placeholder_rule: str     # assemble.PER_IMAGE or assemble.SINGLE: how many <image> the request holds
    input_width: int          # floats per embedding row the model accepts

    def generate(self, request, on_text: Callable[[str], None] | None = None) -> Generation:
        """Text for one ``assemble.Request``; pieces go to ``on_text`` as they come.
        Raises Interrupted (with the partial Generation) after ``abort()``."""

    def generate_text(self, request, on_text: Callable[[str], None] | None = None) -> Generation:
        """Text for one ``assemble.TextRequest`` (no images: the timeline's summary); otherwise as
        ``generate``."""

    def abort(self) -> None:
        """Ask a running generate() to stop soon; safe from a signal handler or another thread."""

    def close(self) -> None:
        """Release the model; safe to call twice."""
