"""Assembled request to text.

INTERFACE (implementation in progress). The pipeline relies only on these names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


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
    raise NotImplementedError
