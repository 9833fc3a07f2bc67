"""ONNX Runtime vision encoders: the portable twin of the ``.rknn`` path.

Why ONNX: it is the file a user already has on the way to the board —
Rockchip's multimodal demo exports the vision tower to ONNX and only then
converts it to ``.rknn`` (baking mean/std in at that step). So the ONNX file
takes *normalised* float32 NCHW input (``normalize = "host"``); a graph
whose input is uint8 NHWC has its normalisation inside and is fed like the
board's encoder (``"encoder"``).

One InferenceSession per pool worker, each with ``cores // workers`` intra-op
threads, so the workers share the CPU instead of oversubscribing it. Each
session holds its own copy of the weights: on a PC with a large encoder,
``vision.workers = 1`` (one session using every core) saves memory at little
cost in speed.

Rockchip's Qwen exports have a second input, ``grid_thw`` = [[1, H/patch,
W/patch]] (fixed as a constant at ``.rknn`` conversion). With merge size 2 it
equals [[1, 2·√T, 2·√T]] for a square input, so it is derived from the
profile's tokens per image. Output shapes of such exports are dynamic; they
are then read from one probe run on a blank frame at load time.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..llm.base import CPU_EXTRA_HINT
from .base import VisionError


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise VisionError(f"onnxruntime is not installed; {CPU_EXTRA_HINT}") from None
    return onnxruntime


def _static(dims) -> bool:
    return all(isinstance(d, int) and d > 0 for d in dims)


class OnnxEncoder:
    """One InferenceSession; used by one pool thread at a time."""

    def __init__(self, path: str, profile, threads: int = 0, known_shapes: list | None = None):
        ort = _ort()
        self.path = str(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: ORT warns about unused initialisers in exports
        try:
            self.session = ort.InferenceSession(self.path, sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise VisionError(f"{self.path}: cannot load the ONNX model: {_first_line(exc)}") from None
        self._read_inputs(profile)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = [list(o.shape) for o in self.session.get_outputs()]
        if known_shapes is not None:
            self.output_shapes = [list(s) for s in known_shapes]
        elif not all(_static(s) for s in self.output_shapes):
            probe = np.zeros(self.input_shape, dtype=self.input_dtype)
            self.output_shapes = [list(np.shape(o)) for o in self.run(probe)]

    def _read_inputs(self, profile) -> None:
        inputs = self.session.get_inputs()
        image = [i for i in inputs if len(i.shape) == 4]
        if len(image) != 1:
            raise VisionError(f"{self.path}: expected one image input [1,3,H,W] or [1,H,W,3], "
                              f"found inputs {[(i.name, i.shape) for i in inputs]}")
        image = image[0]
        self.input_name = image.name
        if image.type == "tensor(uint8)":
            # Mean/std inside the graph: fed like the board's .rknn.
            self.normalize, layout = "encoder", "nhwc"
            dims = image.shape[1:3]
        elif image.type == "tensor(float)":
            self.normalize, layout = "host", "nchw"
            dims = image.shape[2:4]
        else:
            raise VisionError(f"{self.path}: image input {image.name!r} is {image.type}; "
                              f"expected float32 NCHW or uint8 NHWC")
        sides = {d for d in dims if isinstance(d, int) and d > 0}
        if len(sides) > 1:
            raise VisionError(f"{self.path}: input {image.name!r} is not square ({image.shape}); "
                              f"rkvideo letterboxes frames to a square")
        # Dynamic height/width (Rockchip's Qwen exports): the profile's size is fed, and the model
        # cannot say which it wants (input_size None: the token count is checked instead).
        self.input_size = sides.pop() if sides else None
        size = self.input_size or int(profile.input_size)
        self.input_shape = (1, size, size, 3) if layout == "nhwc" else (1, 3, size, size)
        self.input_dtype = np.uint8 if layout == "nhwc" else np.float32
        self.extra = {}
        for extra in inputs:
            if extra.name == image.name:
                continue
            if "grid" in extra.name.lower() and extra.type == "tensor(int64)":
                self.extra[extra.name] = _grid_thw(self.path, profile)
            else:
                raise VisionError(f"{self.path}: unsupported extra input {extra.name!r} {extra.type} "
                                  f"{extra.shape} (rkvideo feeds one image input and an optional grid_thw)")

    def run(self, tensor: np.ndarray) -> list:
        feed = {self.input_name: tensor, **self.extra}
        try:
            return self.session.run(self.output_names, feed)
        except Exception as exc:
            raise VisionError(f"{self.path}: ONNX Runtime failed: {_first_line(exc)}") from None

    def close(self) -> None:
        self.session = None


def _grid_thw(path: str, profile) -> np.ndarray:
    side = math.isqrt(profile.tokens_per_image)
    if side * side != profile.tokens_per_image:
        raise VisionError(f"{path}: grid_thw needs a square token grid, but model.tokens_per_image is "
                          f"{profile.tokens_per_image}")
    # Qwen's merge size is 2: the patch grid is twice the token grid on each side.
    return np.array([[1, 2 * side, 2 * side]], dtype=np.int64)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_encoders(path: str, profile, workers: int) -> list:
    """``workers`` sessions of ``path``; the CPU cores are split between them."""
    workers = max(1, int(workers))
    threads = max(1, (os.cpu_count() or 1) // workers)
    encoders = []
    try:
        for _ in range(workers):
            # Dynamic output shapes are probed once, by the first session.
            known = encoders[0].output_shapes if encoders else None
            encoders.append(OnnxEncoder(path, profile, threads, known))
    except BaseException:
        for encoder in encoders:
            encoder.close()
        raise
    return encoders
