"""Frames to vision embeddings: one pool of encoder instances, any runtime.

Why a pool of threads fed through a bounded queue: on the board the encoder
is the slow stage (about 2 s per frame on one NPU core) and RK3588 has three
cores, so three single-core instances encode three frames at once while the
sampler decodes the next ones. The runtimes release the GIL while they run
(RKNNLite, ONNX Runtime), so plain threads are enough. The queue is bounded
(``vision.queue_size``) so a fast decoder never holds more than a few
full-size frames in memory, and decoding frame k+1 overlaps encoding frame k.

The pool is written once; a runtime only supplies ``Encoder`` instances
(``.onnx`` → ``onnxrt``, ``.rknn`` → ``rknn``). Before any frame is encoded
the pool reads tokens and width from the encoder's output shapes and checks
them against the model profile, because a wrong T or D does not fail later —
it produces fluent, wrong text.

Threads live for one ``encode`` call: they are started per request and joined
before it returns or raises, so an idle daemon runs no pool thread and an
error can never leave one behind.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np

from . import assemble, preprocess
from .media import Frame


class VisionError(RuntimeError):
    """An encoder could not be loaded or failed on a frame; the message names both."""


class Encoder(Protocol):
    """One encoder instance. The pool drives each instance from one thread at a time."""
    path: str                 # the model file, for error messages
    normalize: str            # "encoder" (feed uint8 NHWC) or "host" (feed normalised float32 NCHW)
    input_size: int           # square input side, read from the model
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


# How often blocked threads look at the stop flag. Only the error path waits
# this long; the normal path is woken by the queues themselves.
_POLL = 0.05
THREAD_PREFIX = "rkvideo-vision"


def check_encoder(encoder, profile) -> tuple[int, int]:
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
        ("tokens_per_image", tokens, profile.tokens_per_image, "tokens per image"),
        ("embed_width", width, profile.embed_width, "floats per token per output"),
        ("input_size", encoder.input_size, profile.input_size, "input side"),
    ]
    for key, got, want, what in facts:
        if got != want:
            raise VisionError(
                f"{encoder.path}: the encoder has {got} {what}, profile {profile.name} says {want} "
                f"(output shapes {shapes}; set model.{key} = {got} in config.toml if this encoder is right, "
                f"or use the encoder that matches the profile)")
    return tokens, width


class VisionPool:
    def __init__(self, encoders: list, profile, queue_size: int = 4):
        if not encoders:
            raise VisionError("the vision pool needs at least one encoder instance")
        self.encoders = list(encoders)
        self.profile = profile
        self.queue_size = max(1, int(queue_size))
        checked = {check_encoder(e, profile) for e in self.encoders}
        if len(checked) != 1:
            raise VisionError(f"{self.encoders[0].path}: encoder instances disagree on shapes: {checked}")
        self.tokens, self.width = checked.pop()
        self.outputs = len(self.encoders[0].output_shapes)

    @property
    def output_width(self) -> int:
        """E: floats per vision token after combining outputs."""
        return self.width * self.outputs

    @property
    def workers(self) -> int:
        return len(self.encoders)

    def encode(self, frames: Iterable[Frame], on_frame: Callable[[Frame], None] | None = None) -> Encoded:
        """Encode every frame of ``frames``; the result is in the order the frames were given.

        ``on_frame`` is called from this thread as each frame finishes encoding
        (in completion order). The first failure stops the request: the
        feeder and the workers are stopped and joined, and a VisionError
        naming the frame is raised.
        """
        if not self.encoders:
            raise VisionError("the vision pool is closed")
        run = _Run(self, frames)
        start = time.perf_counter()
        try:
            run.start()
            results = run.collect(on_frame)
        finally:
            run.stop()
        vision = time.perf_counter() - start
        order = sorted(results)
        picked = [results[k][0] for k in order]
        if picked:
            embeddings = np.ascontiguousarray(np.stack([results[k][1] for k in order]), dtype=np.float32)
        else:
            embeddings = np.zeros((0, self.tokens, self.output_width), np.float32)
        timings = {"decode": run.decode_seconds, "preprocess": run.busy["preprocess"],
                   "encode": run.busy["encode"], "vision": vision}
        return Encoded(frames=picked, embeddings=embeddings, timings=timings)

    def close(self) -> None:
        encoders, self.encoders = self.encoders, []
        errors = []
        for encoder in encoders:
            try:
                encoder.close()
            except Exception as exc:  # keep releasing the others
                errors.append(f"{encoder.path}: {exc}")
        if errors:
            raise VisionError("; ".join(errors))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_DONE = object()


class _Run:
    """One encode() call: a feeder thread decoding into the bounded queue, one
    worker thread per encoder, and the caller collecting results."""

    def __init__(self, pool: VisionPool, frames: Iterable[Frame]):
        self.pool = pool
        self.frames = frames
        self.todo: queue.Queue = queue.Queue(maxsize=pool.queue_size)
        self.done: queue.Queue = queue.Queue()
        self.halt = threading.Event()
        self.threads: list[threading.Thread] = []
        self.decode_seconds = 0.0
        self.busy = {"preprocess": 0.0, "encode": 0.0}
        self.lock = threading.Lock()

    def start(self) -> None:
        self.threads.append(threading.Thread(target=self._feed, name=f"{THREAD_PREFIX}-feed", daemon=True))
        for i, encoder in enumerate(self.pool.encoders):
            self.threads.append(threading.Thread(target=self._work, args=(encoder,),
                                                 name=f"{THREAD_PREFIX}-{i}", daemon=True))
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join()

    def _put(self, q: queue.Queue, item) -> bool:
        """Put unless the run is halted; False if it was."""
        while not self.halt.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _feed(self) -> None:
        seq = 0
        iterator = iter(self.frames)
        try:
            while not self.halt.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                finally:
                    self.decode_seconds += time.perf_counter() - t0
                if not self._put(self.todo, (seq, frame)):
                    return
                seq += 1
        except BaseException as exc:  # a decode error ends the request, reported by the caller
            self.done.put(("error", None, exc))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and self.halt.is_set():
                close()
        self.done.put(("fed", seq, None))
        for _ in self.pool.encoders:
            self._put(self.todo, _DONE)

    def _work(self, encoder) -> None:
        profile, tokens, width = self.pool.profile, self.pool.tokens, self.pool.width
        while not self.halt.is_set():
            try:
                item = self.todo.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            seq, frame = item
            try:
                t0 = time.perf_counter()
                tensor = preprocess.for_profile(frame.image, profile, encoder.normalize)
                t1 = time.perf_counter()
                outputs = encoder.run(tensor)
                t2 = time.perf_counter()
                row = assemble.combine_outputs(outputs, tokens, width)
            except BaseException as exc:
                self.done.put(("error", frame, exc))
                return
            with self.lock:
                self.busy["preprocess"] += t1 - t0
                self.busy["encode"] += t2 - t1
            self.done.put(("ok", seq, (frame, row)))

    def collect(self, on_frame) -> dict:
        results: dict = {}
        expected = None
        while expected is None or len(results) < expected:
            kind, key, value = self.done.get()
            if kind == "ok":
                results[key] = value
                if on_frame:
                    on_frame(value[0])
            elif kind == "fed":
                expected = key
            else:
                self._raise(key, value)
        return results

    def _raise(self, frame, exc) -> None:
        self.halt.set()
        path = self.pool.encoders[0].path
        if frame is None:  # the frame source itself failed: keep its own error type (MediaError…)
            raise exc
        where = f"frame {frame.index} ({Path(frame.source).name} at {frame.seconds:.2f}s)"
        if isinstance(exc, VisionError):
            raise VisionError(f"{where}: {exc}") from exc
        raise VisionError(f"{path}: {where}: {type(exc).__name__}: {exc}") from exc


def open_pool(path: str, profile, workers: int, queue_size: int = 4) -> VisionPool:
    """Load ``workers`` encoder instances of ``path`` (runtime chosen by suffix) into a pool."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        from .onnxrt import open_encoders
    elif suffix == ".rknn":
        from .rknn import open_encoders
    else:
        raise VisionError(f"{path}: unknown vision encoder type {suffix or '(no suffix)'!r} "
                          f"(model.vision must be a .rknn file for the NPU or an .onnx file for any PC)")
    encoders = open_encoders(str(path), profile, workers)
    try:
        return VisionPool(encoders, profile, queue_size)
    except BaseException:
        for encoder in encoders:
            encoder.close()
        raise
