"""Assembled request to text: the LLM runtime for a model file, chosen by its suffix.

Why a registry of runtimes: the board runs ``.rkllm`` files through
Rockchip's C runtime (``rkllm``), a PC runs ``.gguf`` files through llama.cpp
(``llamacpp``), and the pipeline must not care which. Each runtime renders the
runtime-neutral ``assemble.Request`` its own way (RKLLM expands ``<image>``
placeholders itself, llama.cpp is fed token ids and embedding rows) and
reports the same ``Generation`` (see ``base``).

Only code registers runtimes: the two real ones below, and tests, which
register their doubles (``with register(".fake", opener): …`` puts back
whatever was there when the block ends). A user can select nothing else.

The runtime modules are imported inside their openers, so ``import
rkvideo.llm`` never loads llama-cpp-python or librkllmrt.so; they import the
shared names from ``base``, never from this package.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..modelfile import ModelFileError
from .. import registry
from ..registry import Registration
from .base import CPU_EXTRA_HINT, LLM, Generation, Interrupted, LLMError, Utf8Stream

__all__ = ["CPU_EXTRA_HINT", "LLM", "Generation", "Interrupted", "LLMError", "Registration", "Runtime",
           "Utf8Stream", "open_llm", "register", "runtime_for"]

# opener(path, config, profile, npu_vision) -> LLM. ``npu_vision``: the vision encoder runs on the
# NPU too, so an NPU runtime must load into the other memory domain (docs/board.md, "NPU memory domains").
Opener = Callable[[str, object, object, bool], LLM]


@dataclass(frozen=True)
class Runtime:
    """One LLM runtime: the suffix it reads and how a file is opened."""
    suffix: str
    opener: Opener


_RUNTIMES: dict[str, Runtime] = {}


def register(suffix: str, opener: Opener) -> Registration:
    """Open files ending in ``suffix`` (".gguf") with ``opener``; replaces an entry for the same suffix."""
    return registry.add(_RUNTIMES, suffix, Runtime(suffix.lower(), opener), ".gguf")


def runtime_for(path) -> Runtime:
    """The runtime registered for ``path``'s suffix; a ``ModelFileError`` (the configuration is wrong)
    names the file types there are."""
    suffix = Path(path).suffix.lower()
    try:
        return _RUNTIMES[suffix]
    except KeyError:
        raise ModelFileError(f"{path}: unknown LLM file type {suffix or '(no suffix)'!r} "
                       f"(model.llm must be a .rkllm file for the NPU or a .gguf file for any PC)") from None


def open_llm(path: str, config, profile, npu_vision: bool = False) -> LLM:
    """Load the LLM at ``path``; the runtime follows the suffix (.gguf, .rkllm)."""
    return runtime_for(path).opener(str(path), config, profile, npu_vision)


def _open_llamacpp(path: str, config, profile, npu_vision: bool) -> LLM:
    from . import llamacpp   # with the first .gguf file: `import rkvideo.llm` stays free of runtimes
    return llamacpp.open_llamacpp(path, config, profile)    # the CPU: no NPU memory domain to choose


def _open_rkllm(path: str, config, profile, npu_vision: bool) -> LLM:
    from . import rkllm      # with the first .rkllm file: `import rkvideo.llm` stays free of runtimes
    return rkllm.open_rkllm(path, config, profile, npu_vision)


register(".gguf", _open_llamacpp)
register(".rkllm", _open_rkllm)
