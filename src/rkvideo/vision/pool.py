"""Frames to vision embeddings: one pool of encoder instances, any runtime.

Why a pool of threads fed through a bounded queue: on the board the encoder
is the slow stage — Rockchip publishes 2–3.3 s per image for the stock
encoders, measured with all three NPU cores on one image; the time of one
core is not published, but splitting a transformer encoder over cores gains
little (docs/board.md, "Published RK3588 performance") — and RK3588 has three
cores, so three single-core instances encode three frames at once while the
sampler decodes the next ones. The runtimes release the GIL while they run
(RKNNLite, ONNX Runtime), so plain threads are enough. The queue is bounded
(``vision.queue_size``) so a fast decoder never holds more than a few
full-size frames in memory, and decoding frame k+1 overlaps encoding frame k.

The pool is written once; a runtime only supplies ``Encoder`` instances
(see ``base``). Before any frame is encoded the pool reads tokens and width
from the encoder's output shapes and checks them against the model profile,
because a wrong T or D does not fail later — it produces fluent, wrong text.

Threads live for one ``encode`` call: they are started per request and joined
before it returns or raises, so an idle daemon runs no pool thread and an
error can never leave one behind.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .. import assemble, preprocess
from ..media import Frame
from .base import Encoded, VisionError, check_encoder

# How often blocked threads look at the stop flag. Only the error path waits
# this long; the normal path is woken by the queues themselves.
_POLL = 0.05
THREAD_PREFIX = "rkvideo-vision"


class VisionPool:
    """Encoder instances of one model, driven by one thread each; ``encode`` is one request."""

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

