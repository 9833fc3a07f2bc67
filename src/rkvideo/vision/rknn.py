"""RKNN vision encoders on the RK3588 NPU through RKNNLite (rknn-toolkit-lite2).

Why one RKNNLite instance per NPU core: a transformer encoder gains little from
splitting one model over cores (``NPU_CORE_0_1_2``), while three single-core
instances encode three frames at once — the pool in ``vision.pool`` drives each
instance from one thread at a time, which is all the thread safety RKNNLite
offers. Each instance holds its own copy of the weights and all of them share
NPU IOMMU domain 0 (4 GiB; docs/board.md, "NPU memory domains"), so big
encoders may not fit three times: the pool is sized from the file first, and
an instance whose ``init_runtime`` still fails is dropped with a warning
instead of failing the whole load.

RKNNLite reports errors only as return values (``load_rknn``/``init_runtime``
return −1, ``inference`` returns None) and logs the reason itself (docs/board.md,
"Vision encoder (RKNNLite)"); every one is checked here and turned into a VisionError naming
the file and the core.

RKNNLite has no query API for tensor shapes (``rknn_lite.py`` exposes none),
so the input side comes from the profile, and one warm-up inference on a grey
frame at load time reveals the output shapes: tokens per image, width and the
number of outputs are read from them and checked against the profile before
any real frame is encoded. The input side itself cannot be checked (whether
the runtime refuses a buffer of the wrong size is unknown), so the encoder
reports it as unknown and the token count stands in for it: a mismatch names
``model.input_size`` as well as ``model.tokens_per_image`` (``check_encoder``).
The warm-ups run in parallel, one per core, so they cost about one encoder call.

The real class is lenient in two ways that hide mistakes (docs/board.md,
"Vision encoder (RKNNLite)"): it takes a 4-D NCHW array for an NHWC model,
transposing it with a warning, and float32 input for a model with mean/std
built in — so host-normalised input to such a model is normalised twice
without any error. Only ``model.normalize`` prevents that; rkvideo feeds
exactly what the setting says.

rknn-toolkit-lite2 ships wheels for CPython 3.7–3.12 only (``TOOLKIT_WHEELS``);
on a newer Python the import error says to make a 3.12 environment.
"""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import numpy as np

from .. import preprocess
from .base import VisionError, check_encoder

log = logging.getLogger(__name__)

EXTRA_HINT = "install the [rk] extra on the board: pip install 'rkvideo[rk]'"
# CPython versions with an rknn-toolkit-lite2 wheel (manylinux aarch64): 2.3.2 in the rknn-toolkit2
# repository, 2.5.0 on the package index. No release has a cp313 wheel (docs/board.md, "Driver, libraries
# and Python packages"); the [rk] extra's marker in pyproject.toml skips the package on 3.13+.
TOOLKIT_WHEELS = {"2.3.2": ((3, 7), (3, 12)), "2.5.0": ((3, 10), (3, 12))}
PYTHON_FIX = ("make a Python 3.12 environment and install there: uv venv --seed --python 3.12 ~/rkvideo-venv && "
              "~/rkvideo-venv/bin/pip install 'rkvideo[rk]' (README, \"On the board\")")
MASKS = (1, 2, 4)               # RKNNLite.NPU_CORE_0, _1, _2
DOMAIN_BYTES = 4 << 30          # NPU IOMMU domain 0, shared by every RKNN context
# The runtime asks for somewhat more NPU memory than the file size (#195: 1.43 GB for 1.34 GB).
OVERHEAD = 1.1


def wheels_for(python: tuple) -> list[str]:
    """The rknn-toolkit-lite2 releases with a wheel for this CPython (major, minor, ...)."""
    return [release for release, (low, high) in TOOLKIT_WHEELS.items() if low <= tuple(python[:2]) <= high]


def wheel_table() -> str:
    """``2.3.2: cp37–cp312; 2.5.0: cp310–cp312``."""
    return "; ".join(f"{release}: cp{low[0]}{low[1]}–cp{high[0]}{high[1]}"
                     for release, (low, high) in TOOLKIT_WHEELS.items())


def toolkit_hint(python: tuple = tuple(sys.version_info[:3])) -> str:
    """What to do when rknnlite cannot be imported on this Python."""
    if wheels_for(python):
        return EXTRA_HINT
    version = ".".join(str(v) for v in python[:3])
    return f"rknn-toolkit-lite2 has no wheel for Python {version} ({wheel_table()}); {PYTHON_FIX}"


def _load_class():
    """The RKNNLite class; tests replace this function to inject a test double."""
    try:
        from rknnlite.api import RKNNLite
    except (ImportError, OSError) as exc:
        raise VisionError(f"rknn-toolkit-lite2 cannot be imported ({exc}); {toolkit_hint()}") from None
    return RKNNLite


class InitFailed(VisionError):
    """``init_runtime`` failed on one core (usually: no NPU memory left)."""


class RKNNEncoder:
    """One RKNNLite instance pinned to one NPU core."""

    def __init__(self, rknn_class, path: str, profile, core: int):
        self.path = str(path)
        self.core = core
        self.normalize = profile.normalize
        # RKNNLite cannot report the input side: the profile's is fed, and the token count read at
        # warm-up stands in for it (see the module docstring).
        self.input_size = None
        self.output_shapes: list = []
        self._rknn = rknn_class()
        rc = self._rknn.load_rknn(self.path)
        if rc != 0:
            self.close()
            raise VisionError(f"{self.path}: RKNNLite.load_rknn failed (return code {rc}): the file is missing, "
                              f"unreadable or not an .rknn model")
        rc = self._rknn.init_runtime(core_mask=MASKS[core])
        if rc != 0:
            self.close()
            raise InitFailed(f"{self.path}: RKNNLite.init_runtime on NPU core {core} failed (return code {rc}; "
                             f"the runtime's log above says why: no NPU memory left, /usr/lib/librknnrt.so "
                             f"missing or too old, or an .rknn built for another SoC — run `rkvideo doctor`)")

    def run(self, tensor: np.ndarray) -> list:
        if self._rknn is None:
            raise VisionError(f"{self.path}: the encoder on NPU core {self.core} is closed")
        layout = "nhwc" if self.normalize == "encoder" else "nchw"
        outputs = self._rknn.inference(inputs=[tensor], data_type=str(tensor.dtype), data_format=layout)
        if outputs is None:
            raise VisionError(f"{self.path}: RKNNLite.inference failed on NPU core {self.core} "
                              f"(it returned None; the runtime's log above says why)")
        return [np.ascontiguousarray(np.asarray(o, dtype=np.float32)) for o in outputs]

    def close(self) -> None:
        rknn, self._rknn = self._rknn, None
        if rknn is not None:
            rknn.release()


def fitting_instances(size_bytes: int) -> int:
    """How many copies of an encoder of this file size fit NPU domain 0 (at least 1 is tried)."""
    return max(1, int(DOMAIN_BYTES // max(1, int(size_bytes * OVERHEAD))))


def _plan_workers(path: Path, workers: int) -> int:
    wanted = max(1, int(workers))
    if wanted > len(MASKS):
        log.warning("%s: vision.workers = %d but the RK3588 NPU has %d cores; using %d encoder instances",
                    path, wanted, len(MASKS), len(MASKS))
        wanted = len(MASKS)
    fit = fitting_instances(path.stat().st_size)
    if fit < wanted:
        log.warning("%s: %d copies of this %.2f GB encoder do not fit the 4 GiB NPU memory domain; using %d "
                    "(set vision.workers = %d)", path, wanted, path.stat().st_size / 1e9, fit, fit)
        wanted = fit
    return wanted


def _warm_up(encoders: list, profile) -> list:
    """One grey frame through every instance, in parallel; returns the instances that worked."""
    side = int(profile.input_size)
    tensor = preprocess.for_profile(np.full((side, side, 3), 128, np.uint8), profile)
    results: list = [None] * len(encoders)

    def one(k):
        try:
            results[k] = [tuple(np.shape(o)) for o in encoders[k].run(tensor)]
        except Exception as exc:
            results[k] = exc

    threads = [threading.Thread(target=one, args=(k,), name=f"rkvideo-rknn-warmup-{k}") for k in range(len(encoders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    working = []
    for encoder, result in zip(encoders, results):
        if isinstance(result, list):
            encoder.output_shapes = [list(s) for s in result]
            working.append(encoder)
    if not working:
        layout = "uint8 NHWC" if profile.normalize == "encoder" else "float32 NCHW"
        raise VisionError(f"{encoders[0].path}: the warm-up inference on a grey {side}×{side} {layout} frame failed "
                          f"on every NPU core ({results[0]}); check that the encoder's input is {side}×{side} "
                          f"(model.input_size) and that the .rknn was converted for this SoC")
    for encoder, result in zip(encoders, results):
        if not isinstance(result, list):
            log.warning("%s: dropping the encoder on NPU core %d after a failed warm-up: %s",
                        encoder.path, encoder.core, result)
            encoder.close()
    return working


def open_encoders(path: str, profile, workers: int) -> list:
    """Up to ``workers`` (≤ 3) RKNNLite instances of ``path``, one per NPU core, checked against ``profile``."""
    rknn_class = _load_class()
    file = Path(path)
    if not file.is_file():
        raise VisionError(f"{path}: vision model file not found (model.vision)")
    wanted = _plan_workers(file, workers)
    encoders: list = []
    try:
        for core in range(wanted):
            try:
                encoders.append(RKNNEncoder(rknn_class, str(path), profile, core))
            except InitFailed as exc:
                if not encoders:
                    raise
                log.warning("%s — continuing with %d encoder instance(s); set vision.workers = %d to skip this",
                            exc, len(encoders), len(encoders))
                break
        encoders = _warm_up(encoders, profile)
        check_encoder(encoders[0], profile)
    except BaseException:
        for encoder in encoders:
            encoder.close()
        raise
    return encoders
