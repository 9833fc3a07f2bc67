"""Assembled request to text: the protocol every LLM runtime implements.

Why a protocol and a dispatcher on the file suffix: the board runs ``.rkllm``
files through Rockchip's C runtime, a PC runs ``.gguf`` files through
llama.cpp, and the pipeline must not care which. Each runtime renders the
runtime-neutral ``assemble.Request`` its own way (RKLLM expands ``<image>``
placeholders itself, llama.cpp is fed token ids and embedding rows) and
reports the same ``Generation``. The runtime modules are imported only when
their file type is opened, so the core install never needs their packages.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

# What a missing or broken portable-path package (onnxruntime, llama-cpp-python, onnx...) asks for.
CPU_EXTRA_HINT = "install the [cpu] extra: pip install 'rkvideo[cpu]'"


class LLMError(RuntimeError):
    """The LLM runtime failed (load, a return code, an error state); the message names the file."""


class Interrupted(RuntimeError):
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
    path: str
    placeholder_rule: str     # assemble.PER_IMAGE or assemble.SINGLE
    input_width: int          # floats per embedding row the model accepts

    def generate(self, request, on_text: Callable[[str], None] | None = None) -> Generation: ...

    def abort(self) -> None:
        """Ask a running generate() to stop soon; safe from a signal handler or another thread."""

    def close(self) -> None: ...


def open_llm(path: str, config, profile, npu_vision: bool = False) -> LLM:
    """Load the LLM at ``path``; the runtime follows the suffix (.gguf, .rkllm)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gguf":
        from .llamacpp import open_llamacpp
        return open_llamacpp(str(path), config, profile)
    if suffix == ".rkllm":
        from .rkllm import open_rkllm
        return open_rkllm(str(path), config, profile, npu_vision)
    raise LLMError(f"{path}: unknown LLM file type {suffix or '(no suffix)'!r} "
                   f"(model.llm must be a .rkllm file for the NPU or a .gguf file for any PC)")
