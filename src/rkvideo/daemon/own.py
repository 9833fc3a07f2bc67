"""The daemon's own files, which it must never take for recordings.

Why: the database with its -wal, -shm and -journal files and its lock file, the sidecars, and the
``output.dir`` folder may all sit inside a watched folder, and a pattern such as ``*`` matches them.
Queued, they fail; the -wal file changes with every commit and would fail again and again, forever.

A sidecar is known by its name, ``<recording>.<kind>`` (``door.mp4.vtt``), with the recording beside
it: a ``notes.txt`` that belongs to no recording is an ordinary file.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from .. import output


class OwnFiles:
    """``own(path)``: the path is one of the daemon's own files (see the module docstring)."""

    def __init__(self, store_files, out_dir: str | os.PathLike | None, matcher: Callable[[str], bool]):
        self.files = {os.path.realpath(f) for f in store_files}
        self.names = {os.path.basename(f) for f in self.files}
        self.out_dir = os.path.realpath(out_dir) if out_dir else None
        self.matcher = matcher

    def __call__(self, path: str) -> bool:
        name = os.path.basename(path)
        if name in self.names and os.path.realpath(path) in self.files:
            return True
        if self.out_dir and (path == self.out_dir or path.startswith(self.out_dir + "/")):
            return True
        recording, dot, kind = path.rpartition(".")
        return bool(dot) and kind in output.KINDS and self.matcher(recording) and os.path.lexists(recording)
