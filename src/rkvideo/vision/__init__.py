"""Frames to vision embeddings: the runtime for a model file, chosen by its suffix, and its pool.

Why a registry of runtimes: the board encodes ``.rknn`` files on the NPU
(``rknn``), a PC encodes ``.onnx`` files with ONNX Runtime (``onnxrt``), and
nothing above this package may care which. A runtime is registered once with
the suffix it reads and what the rest of the pipeline must know about it —
today one fact: whether it runs on the NPU, because then the LLM has to load
into the other NPU memory domain (docs/board.md, "NPU memory domains"). The
pipeline asks ``runtime_for(path).npu`` and never looks at a suffix itself.

Only code registers runtimes: the two real ones below, and tests, which
register their doubles (``with register(".fake", opener): …`` puts back
whatever was there when the block ends). A user can select nothing else.

The runtime modules are imported inside their openers, so ``import
rkvideo.vision`` never loads onnxruntime or rknn-toolkit-lite2; they import
the shared names from ``base``, never from this package.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..modelfile import ModelFileError
from .. import registry
from ..registry import Registration
from .base import Encoded, Encoder, Vision, VisionError, check_encoder
from .pool import THREAD_PREFIX, VisionPool

__all__ = ["Encoded", "Encoder", "Registration", "Runtime", "THREAD_PREFIX", "Vision", "VisionError",
           "VisionPool", "check_encoder", "open_pool", "pooled", "register", "runtime_for"]

# opener(path, profile, workers, queue_size) -> the loaded stage (a VisionPool, or a test's double)
Opener = Callable[[str, object, int, int], Vision]


@dataclass(frozen=True)
class Runtime:
    """One vision runtime: the suffix it reads, how a file is opened, and where it runs."""
    suffix: str
    opener: Opener
    npu: bool = False         # encodes on the RK3588 NPU (its memory domain 0)


_RUNTIMES: dict[str, Runtime] = {}


def register(suffix: str, opener: Opener, *, npu: bool = False) -> Registration:
    """Open files ending in ``suffix`` (".onnx") with ``opener``; replaces an entry for the same suffix."""
    return registry.add(_RUNTIMES, suffix, Runtime(suffix.lower(), opener, npu), ".onnx")


def runtime_for(path) -> Runtime:
    """The runtime registered for ``path``'s suffix; a ``ModelFileError`` (the configuration is wrong)
    names the file types there are."""
    suffix = Path(path).suffix.lower()
    try:
        return _RUNTIMES[suffix]
    except KeyError:
        raise ModelFileError(f"{path}: unknown vision encoder type {suffix or '(no suffix)'!r} "
                          f"(model.vision must be a .rknn file for the NPU or an .onnx file for any PC)") from None


def open_pool(path: str, profile, workers: int, queue_size: int = 4) -> Vision:
    """Load ``workers`` encoder instances of ``path`` (runtime chosen by suffix) into a pool."""
    return runtime_for(path).opener(str(path), profile, workers, queue_size)


def pooled(open_encoders: Callable[[str, object, int], list]) -> Opener:
    """An opener putting the instances ``open_encoders(path, profile, workers)`` returns into a
    VisionPool; they are closed again if the pool refuses them (shapes that contradict the profile)."""
    def open_into_pool(path: str, profile, workers: int, queue_size: int) -> VisionPool:
        encoders = open_encoders(path, profile, workers)
        try:
            return VisionPool(encoders, profile, queue_size)
        except BaseException:
            for encoder in encoders:
                encoder.close()
            raise
    return open_into_pool


def _onnx_encoders(path: str, profile, workers: int) -> list:
    from . import onnxrt     # with the first .onnx file: `import rkvideo.vision` stays free of runtimes
    return onnxrt.open_encoders(path, profile, workers)


def _rknn_encoders(path: str, profile, workers: int) -> list:
    from . import rknn       # with the first .rknn file: `import rkvideo.vision` stays free of runtimes
    return rknn.open_encoders(path, profile, workers)


register(".onnx", pooled(_onnx_encoders))
register(".rknn", pooled(_rknn_encoders), npu=True)
