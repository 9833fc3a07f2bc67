"""The daemon's own files, which it must never take for recordings.

Why: the database with its -wal, -shm and -journal files, its lock file and its thumbnails
folder, the sidecars, and the ``output.dir`` folder may all sit inside a watched folder, and a
pattern such as ``*`` matches them. Queued, they fail; the -wal file changes with every commit and
would fail again and again, forever.

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
        # Files and folders (everything below a folder is ours too), as real paths.
        self.places = {os.path.realpath(f) for f in [*store_files, *([out_dir] if out_dir else [])]}
        self.matcher = matcher

    def __call__(self, path: str) -> bool:
        real = os.path.realpath(path)
        if any(real == place or real.startswith(place + "/") for place in self.places):
            return True
        recording, dot, kind = path.rpartition(".")
        return bool(dot) and kind in output.KINDS and self.matcher(recording) and os.path.lexists(recording)
