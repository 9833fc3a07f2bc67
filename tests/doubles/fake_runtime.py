"""Test-double vision encoder and LLM for the daemon tests: latency, failures and stops under control.

Not a runtime: the "embeddings" are zeros and the "description" is built from
the clip's file name and frame times, so a search test can look for a word it
knows will be there. The doubles are registered runtimes (``install``): model
files named ``*.fakevision`` and ``*.fakellm`` (the tests' config names such
files, see ``tests/doubles/daemon.py``) open them, so the real ``rkvideo
watch`` and ``rkvideo describe`` code runs unchanged in a real subprocess
(``tests/doubles/run_daemon.py``). Everything else is controlled by
environment variables:

* ``RKVIDEO_FAKE_ENCODE_SECONDS`` / ``RKVIDEO_FAKE_GENERATE_SECONDS``: latency per frame / per request;
* ``RKVIDEO_FAKE_FAIL``: comma-separated words; a clip whose name contains one fails in generate;
* ``RKVIDEO_FAKE_GATE``: a file path; generate waits until the file exists (abortable);
* ``RKVIDEO_FAKE_IGNORE_ABORT=1``: abort() is ignored, like a runtime that hangs;
* ``RKVIDEO_FAKE_LOG``: a file that gets one line per runtime call start/end: ``<event> <clip>``
  (``summary-start``/``summary-end`` for a timeline's request without images);
* ``RKVIDEO_TEST_BLOCK_AT`` = ``point:n`` with ``RKVIDEO_TEST_MARKER`` = a file: at the n-th time the
  process reaches ``point`` it writes the marker and blocks for good, so a test can kill -9 it exactly
  there. Points: ``encode`` (after the first frame) and ``generate`` (after the first text), reached
  by the doubles here; ``claim`` (between jobs: the previous one committed, the next not yet taken),
  ``segment`` (a moment of a timeline kept, the next not begun), ``rename`` (a sidecar's temporary
  file written, not yet renamed), ``sidecar`` (sidecars written, not committed) and ``commit``
  (description inserted and job done, transaction open), reached by the daemon's worker, which calls
  its observers there (``rkvideo.daemon.add_observer``);
* ``RKVIDEO_TEST_NO_EVENTS=1`` turns file-system events off (``daemon.Service.follow_events``),
  ``RKVIDEO_TEST_RESCAN`` sets the seconds between rescans (``daemon.Service.rescan_seconds``),
  ``RKVIDEO_TEST_REPORT`` the seconds between reports to the store and sweeps for the jobs of gone
  workers (``daemon.Service.report_seconds``).
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from rkvideo import assemble, daemon, llm, vision

VISION_SUFFIX, LLM_SUFFIX = ".fakevision", ".fakellm"
MOMENT = re.compile(r"\d+:\d\d(?::\d\d)?–\d+:\d\d(?::\d\d)?: ")     # "00:05–00:10: " in a summary request


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


class Seen:
    """What the vision double saw last; the LLM double describes that clip. One per loaded pair."""

    def __init__(self):
        self.source = ""


class FakeVision:
    """Consumes the frame stream (so decoding really happens) and returns zero embeddings."""

    def __init__(self, profile, seen: Seen):
        self.tokens, self.output_width = profile.tokens_per_image, profile.encoder_width
        self.latency = float(os.environ.get("RKVIDEO_FAKE_ENCODE_SECONDS", "0"))
        self.seen = seen
        self.seconds = 0.0          # time spent inside encode, for the benchmark

    def encode(self, frames, on_frame=None) -> vision.Encoded:
        start = time.perf_counter()
        got = []
        for frame in frames:
            if not got:
                self.seen.source = frame.source
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
        _log("encode-end", Path(self.seen.source).name)
        embeddings = np.zeros((len(got), self.tokens, self.output_width), np.float32)
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        return vision.Encoded(got, embeddings, {"vision": elapsed})

    def close(self) -> None:
        pass


class FakeLLM:
    """Writes a description naming the clip, its frame count and times."""

    placeholder_rule = assemble.PER_IMAGE

    def __init__(self, path: str, profile, seen: Seen):
        self.path = path
        self.input_width = profile.encoder_width
        self.seen = seen
        self.latency = float(os.environ.get("RKVIDEO_FAKE_GENERATE_SECONDS", "0"))
        self.fail = [w for w in os.environ.get("RKVIDEO_FAKE_FAIL", "").split(",") if w]
        self.gate = os.environ.get("RKVIDEO_FAKE_GATE", "")
        self.ignore_abort = bool(os.environ.get("RKVIDEO_FAKE_IGNORE_ABORT"))
        self.aborted = threading.Event()
        self.seconds = 0.0

    def generate(self, request, on_text=None) -> llm.Generation:
        start = time.perf_counter()
        self.aborted.clear()    # like the real runtimes, an abort applies to the running request
        clip = Path(self.seen.source)
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

    def generate_text(self, request, on_text=None) -> llm.Generation:
        """The timeline's summary: names how many moments it was given, and the first one's time."""
        if request.n_images:
            raise llm.LLMError(f"{self.path}: a text-only request with images")
        _log("summary-start", Path(self.seen.source).name)
        moments = [line for line in request.text.splitlines() if MOMENT.match(line)]
        first = moments[0].split(": ", 1)[0] if moments else "?"
        text = f"Summary: {len(moments)} moments, the first at {first}."
        if on_text:
            on_text(text)
        _log("summary-end", Path(self.seen.source).name)
        return llm.Generation(text, request.prompt_tokens, len(text.split()), {"generate": 0.0}, "eos")

    def abort(self) -> None:
        self.aborted.set()

    def close(self) -> None:
        pass


class Pairing:
    """The Describer opens the LLM first, then the vision stage: the LLM's opener leaves the shared
    ``Seen`` here and the vision opener takes it."""

    def __init__(self):
        self.seen = Seen()

    def open_llm(self, path: str, config, profile, npu_vision: bool) -> FakeLLM:
        self.seen = Seen()
        return FakeLLM(path, profile, self.seen)

    def open_vision(self, path: str, profile, workers: int, queue_size: int) -> FakeVision:
        return FakeVision(profile, self.seen)


def install() -> None:
    """Register the doubles as the runtimes of ``*.fakellm`` / ``*.fakevision`` model files, and the
    kill points as an observer of the daemon; apply RKVIDEO_TEST_NO_EVENTS, _RESCAN and _REPORT."""
    pairing = Pairing()
    llm.register(LLM_SUFFIX, pairing.open_llm)
    vision.register(VISION_SUFFIX, pairing.open_vision)
    daemon.add_observer(POINTS.reach)
    # A network share: inotify reports nothing, only the periodic rescan finds new files.
    if os.environ.get("RKVIDEO_TEST_NO_EVENTS"):
        daemon.Service.follow_events = False
    if os.environ.get("RKVIDEO_TEST_RESCAN"):
        daemon.Service.rescan_seconds = float(os.environ["RKVIDEO_TEST_RESCAN"])
    if os.environ.get("RKVIDEO_TEST_REPORT"):
        daemon.Service.report_seconds = float(os.environ["RKVIDEO_TEST_REPORT"])


def write_models(folder: Path) -> tuple[Path, Path]:
    """Empty model files the doubles "load": (vision, llm) in ``folder``."""
    paths = folder / f"fake{VISION_SUFFIX}", folder / f"fake{LLM_SUFFIX}"
    for path in paths:
        path.touch()
    return paths
