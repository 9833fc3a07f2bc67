"""Helpers for the web page's tests: descriptions stored the way the daemon stores them, and
``rkvideo serve`` as a real process.

A description goes in through the store's public queue (``put`` → ``claim`` →
``finish``), with a ``pipeline.Result`` carrying its moments (``events``) and
real JPEG thumbnails, exactly as the worker commits one.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import footage
from rkvideo import media, pipeline, store

ROOT = Path(__file__).resolve().parents[2]


def result(path, text: str, events=(), stamps=(1.0, 3.0, 5.0), model: str = "qwen2-vl-2b",
           prompt: str = "Describe what happens in this video.", thumbnails: bool = True) -> pipeline.Result:
    """A finished description of ``path``: ``events`` are (start, end, text) triples; one frame (and one
    thumbnail, a real JPEG of the test pattern) per stamp."""
    frames = [{"index": i, "pts": int(s * 1000), "seconds": s, "source": str(path)} for i, s in enumerate(stamps)]
    pictures = [media.thumbnail(footage.pattern(i, (640, 360))) for i in range(len(stamps))] if thumbnails else []
    return pipeline.Result(
        inputs=[str(path)], kind=pipeline.Kind.VIDEO, frames=frames, prompt=prompt,
        model={"profile": model, "vision": "vision.onnx", "llm": "llm.gguf"},
        tokens=pipeline.Tokens(prompt=42, vision=4 * len(stamps), new=len(text.split())),
        frames_capped_by_budget=False, timings=pipeline.Timings(encode=0.5, generate=1.25), text=text,
        events=[pipeline.Event(start, end, caption, frames=[]) for start, end, caption in events],
        thumbnails=pictures)


def describe(jobs, path, outcome: pipeline.Result, mtime: float | None = None) -> tuple[int, int]:
    """Queue ``path`` (or queue its job again), claim it and finish it with ``outcome``, as the daemon's
    worker does; returns (job id, description id)."""
    existing = jobs.job_at(str(path))
    if existing is None:
        size = Path(path).stat().st_size if Path(path).exists() else 0
        jobs.put(str(path), store.Status.QUEUED, size=size, mtime=mtime, duration=6.0)
    else:
        jobs.retry([existing.id])
    job = jobs.claim("test-worker")
    assert job is not None and job.path == str(path), "another job was queued first"
    return job.id, jobs.finish(job, outcome)


def clip(path, seconds: float = 6.0) -> Path:
    """A real H.264 clip the browser can play."""
    return footage.make_clip(path, seconds=seconds, fps=10, size=(320, 180), gop=10)


class Server:
    """``rkvideo serve`` in a subprocess on a free 127.0.0.1 port (``--port 0``); ``url`` once it listens.
    Its output is read all along (a full pipe would stall the server) and kept in ``lines``."""

    def __init__(self, *args, env=None):
        command = [sys.executable, "-m", "rkvideo", "serve", "--port", "0", *map(str, args)]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RKVIDEO_")}
        environment.update(env or {})
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=environment, cwd=ROOT)
        self.lines: list = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def _wait_for_url(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(r" at (http://127\.0\.0\.1:\d+/)", line)
                if found:
                    return found.group(1)
            if self.proc.poll() is not None:
                self.reader.join(5)
                raise AssertionError(f"rkvideo serve exited ({self.proc.returncode}):\n{''.join(self.lines)}")
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError("rkvideo serve did not say where it listens:\n" + "".join(self.lines))

    def stop(self) -> tuple[int, str]:
        """SIGTERM; the exit status and everything it wrote."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=30)
        self.reader.join(5)
        return self.proc.returncode, "".join(self.lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
