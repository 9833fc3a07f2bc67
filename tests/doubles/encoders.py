"""Test doubles for the vision pool: encoders whose timing and failures a test controls.

Not a runtime: they live in tests/ and compute nothing a model would. The
output of every double is a fixed function of the input tensor, so a test
can check which frame ended up where.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from rkvideo.vision import VisionError


def signature(tensor: np.ndarray) -> float:
    """What a double writes into every output value for ``tensor``: its mean."""
    return float(np.asarray(tensor, dtype=np.float64).mean())


class ScriptedEncoder:
    """An Encoder whose outputs are filled with ``signature(input)`` (× (k+1) for output k).

    * ``latency``: seconds each run sleeps, like an NPU call that releases the GIL;
    * ``hooks``: {call number or "*": callable(tensor)} run before the result, e.g. to
      wait on an event, to raise, or to count;
    * ``shape``: the reported and produced shape of each output.
    """

    def __init__(self, path="double.rknn", *, tokens=4, width=3, outputs=1, input_size=32,
                 normalize="encoder", latency=0.0, hook=None, shape=None):
        self.path = path
        self.normalize = normalize
        self.input_size = input_size
        self.shape = list(shape or [1, tokens, width])
        self.output_shapes = [list(self.shape) for _ in range(outputs)]
        self.latency = latency
        self.hook = hook
        self.closed = 0
        self.calls = 0
        self.busy = threading.Lock()  # one thread at a time, as the pool promises

    def run(self, tensor):
        if not self.busy.acquire(blocking=False):
            raise AssertionError(f"{self.path}: used by two threads at once")
        try:
            self.calls += 1
            if self.hook is not None:
                self.hook(self, tensor)
            if self.latency:
                time.sleep(self.latency)
            value = signature(tensor)
            return [np.full(self.shape, value * (k + 1), np.float32) for k in range(len(self.output_shapes))]
        finally:
            self.busy.release()

    def close(self):
        self.closed += 1


def failing_on(value: float, message="NPU returned -1"):
    """A hook raising VisionError when the input's signature equals ``value``."""
    def hook(encoder, tensor):
        if abs(signature(tensor) - value) < 1e-6:
            raise VisionError(f"{encoder.path}: inference failed: {message}")
    return hook
