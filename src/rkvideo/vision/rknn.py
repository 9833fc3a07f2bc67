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
"Vision encoder (RKNNLite)"); every one is checked here and turned into an error naming
the file and the core: a file ``load_rknn`` refuses is a ``ModelFileError`` (the configuration is
wrong, exit status 2), an ``init_runtime`` or inference failure a ``VisionError`` (it may pass:
no NPU memory left, a runtime library too old).

RKNNLite has no query API for tensor shapes (``rknn_lite.py`` exposes none),
so the input size comes from the profile and one warm-up inference on a grey
frame at load time both proves the model takes that size and reveals the
output shapes, which are checked against the profile (tokens per image,
width, number of outputs) before any real frame is encoded. The warm-ups run
in parallel, one per core, so they cost about one encoder call.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from .. import modelfile, preprocess
from .base import VisionError, check_encoder

log = logging.getLogger(__name__)

EXTRA_HINT = "install the [rk] extra on the board: pip install 'rkvideo[rk]'"
MASKS = (1, 2, 4)               # RKNNLite.NPU_CORE_0, _1, _2
DOMAIN_BYTES = 4 << 30          # NPU IOMMU domain 0, shared by every RKNN context
# The runtime asks for somewhat more NPU memory than the file size (#195: 1.43 GB for 1.34 GB).
OVERHEAD = 1.1


def _load_class():
    """The RKNNLite class; tests replace this function to inject a test double."""
    try:
        from rknnlite.api import RKNNLite
    except (ImportError, OSError) as exc:
        raise VisionError(f"rknn-toolkit-lite2 cannot be imported ({exc}); {EXTRA_HINT}") from None
    return RKNNLite


class InitFailed(VisionError):
    """``init_runtime`` failed on one core (usually: no NPU memory left)."""


class RKNNEncoder:
    """One RKNNLite instance pinned to one NPU core."""

    def __init__(self, rknn_class, path: str, profile, core: int):
        self.path = str(path)
        self.core = core
        self.normalize = profile.normalize
        # RKNNLite cannot report it; the warm-up inference proves the model takes it.
        self.input_size = int(profile.input_size)
        self.output_shapes: list = []
        self._rknn = rknn_class()
        rc = self._rknn.load_rknn(self.path)
        if rc != 0:
            self.close()
            raise modelfile.ModelFileError(f"{self.path}: RKNNLite.load_rknn failed (return code {rc}): the file "
                                           f"is damaged or not an .rknn model (model.vision)")
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
                          f"(model.input_size) and that model.normalize = {profile.normalize!r} matches how the "
                          f".rknn was converted")
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
    modelfile.check(path, "model.vision", gguf=False, need="an RKNN vision encoder (.rknn)")
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
