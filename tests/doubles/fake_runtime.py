"""Test-double vision encoder and LLM for the daemon tests: latency, failures and stops under control.

Not a runtime: the "embeddings" are zeros and the "description" is built from
the clip's file name and frame times, so a search test can look for a word it
knows will be there. Everything is controlled by environment variables so the
real ``rkvideo watch`` code can run unchanged in a real subprocess
(``tests/doubles/run_daemon.py``):

* ``RKVIDEO_FAKE_ENCODE_SECONDS`` / ``RKVIDEO_FAKE_GENERATE_SECONDS``: latency per frame / per request;
* ``RKVIDEO_FAKE_FAIL``: comma-separated words; a clip whose name contains one fails in generate;
* ``RKVIDEO_FAKE_GATE``: a file path; generate waits until the file exists (abortable);
* ``RKVIDEO_FAKE_IGNORE_ABORT=1``: abort() is ignored, like a runtime that hangs;
* ``RKVIDEO_FAKE_LOG``: a file that gets one line per runtime call start/end: ``<event> <clip>``;
* ``RKVIDEO_TEST_BLOCK_AT`` = ``point:n`` with ``RKVIDEO_TEST_MARKER`` = a file: at the n-th time the
  process reaches ``point`` it writes the marker and blocks for good, so a test can kill -9 it exactly
  there. Points: ``encode`` (after the first frame), ``generate`` (after the first text), ``rename``
  (a sidecar's temporary file written, not yet renamed), ``sidecar`` (sidecars written, not committed),
  ``commit`` (description inserted, transaction open), ``claim``
  (between jobs: the previous one committed, the next not yet taken);
* ``RKVIDEO_TEST_NO_EVENTS=1`` turns file-system events off, ``RKVIDEO_TEST_RESCAN`` sets the seconds
  between rescans (``watch.RESCAN``).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from rkvideo import assemble, llm, models, vision


class Points:
    """The kill points named by RKVIDEO_TEST_BLOCK_AT."""

    def __init__(self):
        spec = os.environ.get("RKVIDEO_TEST_BLOCK_AT", "")
        self.name, _, count = spec.partition(":")
        self.n = int(count or 1)
        self.seen = 0
        self.marker = os.environ.get("RKVIDEO_TEST_MARKER", "")

    def reach(self, name: str, detail: str = "") -> None:
        if name != self.name:
            return
        self.seen += 1
        if self.seen == self.n:
            temp = Path(f"{self.marker}.tmp")
            temp.write_text(f"{name} {detail}\n")
            temp.rename(self.marker)            # the test sees the marker only once it is complete
            threading.Event().wait()        # until the test kills the process


POINTS = Points()


def _log(event: str, clip: str) -> None:
    path = os.environ.get("RKVIDEO_FAKE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{event} {clip} {time.monotonic():.6f}\n")


class FakeVision:
    """Consumes the frame stream (so decoding really happens) and returns zero embeddings."""

    def __init__(self, profile: models.Profile):
        self.tokens, self.output_width = profile.tokens_per_image, profile.encoder_width
        self.latency = float(os.environ.get("RKVIDEO_FAKE_ENCODE_SECONDS", "0"))
        self.last_source = ""
        self.seconds = 0.0          # time spent inside encode, for the benchmark

    def encode(self, frames, on_frame=None) -> vision.Encoded:
        start = time.perf_counter()
        got = []
        for frame in frames:
            if not got:
                self.last_source = frame.source
                _log("encode-start", Path(frame.source).name)
            got.append(frame)
            if on_frame:
                on_frame(frame)
            if self.latency:
                time.sleep(self.latency)
            if len(got) == 1:
                POINTS.reach("encode", frame.source)
        if not got:
            raise vision.VisionError("fake vision: no frames")
        _log("encode-end", Path(self.last_source).name)
        embeddings = np.zeros((len(got), self.tokens, self.output_width), np.float32)
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        return vision.Encoded(got, embeddings, {"vision": elapsed})

    def close(self) -> None:
        pass


class FakeLLM:
    """Writes a description naming the clip, its frame count and times."""

    path = "fake.gguf"
    placeholder_rule = assemble.PER_IMAGE

    def __init__(self, profile: models.Profile, eyes: FakeVision):
        self.input_width = profile.encoder_width
        self.eyes = eyes
        self.latency = float(os.environ.get("RKVIDEO_FAKE_GENERATE_SECONDS", "0"))
        self.fail = [w for w in os.environ.get("RKVIDEO_FAKE_FAIL", "").split(",") if w]
        self.gate = os.environ.get("RKVIDEO_FAKE_GATE", "")
        self.ignore_abort = bool(os.environ.get("RKVIDEO_FAKE_IGNORE_ABORT"))
        self.aborted = threading.Event()
        self.seconds = 0.0

    def generate(self, request, on_text=None) -> llm.Generation:
        start = time.perf_counter()
        self.aborted.clear()    # like the real runtimes, an abort applies to the running request
        clip = Path(self.eyes.last_source)
        _log("generate-start", clip.name)
        if any(word in clip.name for word in self.fail):
            _log("generate-fail", clip.name)
            raise llm.LLMError(f"{self.path}: fake failure for {clip.name}")
        stamps = ", ".join(f"{s:.1f}s" for s in request.stamps)
        words = clip.stem.replace("_", " ").replace("-", " ")
        text = (f"The recording {words} shows {request.n_images} frames at {stamps}. "
                f"Nothing else happens in {clip.stem}.")
        first, rest = text[:20], text[20:]
        if on_text:
            on_text(first)
        POINTS.reach("generate", str(clip))
        deadline = time.monotonic() + self.latency
        while time.monotonic() < deadline or (self.gate and not os.path.exists(self.gate)):
            if self.ignore_abort:
                time.sleep(0.01)            # a hung runtime: the abort never arrives
            elif self.aborted.wait(0.01):
                _log("generate-abort", clip.name)
                raise llm.Interrupted(llm.Generation(first, request.prompt_tokens, 1, {}, "abort"))
        if on_text:
            on_text(rest)
        _log("generate-end", clip.name)
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        return llm.Generation(text, request.prompt_tokens + request.vision_tokens, len(text.split()),
                              {"generate": elapsed}, "eos")

    def abort(self) -> None:
        self.aborted.set()

    def close(self) -> None:
        pass


def open_describer(config):
    """The daemon's ``watch.open_describer`` with the doubles injected."""
    from rkvideo import pipeline
    profile = models.resolve(config.model)
    eyes = FakeVision(profile)
    return pipeline.Describer(config, vision=eyes, llm=FakeLLM(profile, eyes))


def install() -> None:
    """Swap the runtime (for `watch` and `describe`) and add the kill points around the store and
    sidecar writes."""
    from rkvideo import pipeline, sidecars, store, watch
    watch.open_describer = open_describer
    real = pipeline.Describer

    class DescriberWithDoubles(real):
        def __init__(self, config, *, dry_run=False, vision=None, llm=None):
            if not dry_run and vision is None and llm is None:
                profile = models.resolve(config.model)
                vision = FakeVision(profile)
                llm = FakeLLM(profile, vision)
            super().__init__(config, dry_run=dry_run, vision=vision, llm=llm)

    pipeline.Describer = DescriberWithDoubles

    insert = store.Store._insert_description

    def insert_then_point(self, job, *args, **kwargs):
        row = insert(self, job, *args, **kwargs)
        POINTS.reach("commit", job["path"])
        return row

    claim = store.Store.claim_next

    def point_then_claim(self):
        POINTS.reach("claim")
        return claim(self)

    write_all = sidecars.write_all

    def write_then_point(recording, *args, **kwargs):
        written = write_all(recording, *args, **kwargs)
        POINTS.reach("sidecar", str(recording))
        return written

    class OsWithPoint:
        """``os`` for sidecars.py only, with a kill point inside write_atomic (temp file written, not renamed)."""

        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst, **kwargs):
            folder = kwargs.get("dst_dir_fd")    # names are relative to the folder's descriptor
            where = os.path.join(os.readlink(f"/proc/self/fd/{folder}"), dst) if folder is not None else dst
            POINTS.reach("rename", str(where))
            return os.replace(src, dst, **kwargs)

    # A network share: inotify reports nothing, only the periodic rescan finds new files.
    if os.environ.get("RKVIDEO_TEST_NO_EVENTS"):
        watch.Daemon._observe = lambda self: None
    if os.environ.get("RKVIDEO_TEST_RESCAN"):
        watch.RESCAN = float(os.environ["RKVIDEO_TEST_RESCAN"])

    store.Store._insert_description = insert_then_point
    store.Store.claim_next = point_then_claim
    sidecars.write_all = write_then_point
    sidecars.os = OsWithPoint()
