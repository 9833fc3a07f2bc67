"""The thumbnail files: small JPEGs of the frames the model saw, in a folder beside the database.

Why files and not BLOBs: the web page serves them as they are, other tools
can look at them, and the database stays small enough to copy. Why beside the
database (``rkvideo.db`` → ``rkvideo.db.thumbnails/``): they belong to that
database, live as long as it does, and need no setting. Files are named by
description and frame (``0000/12-3.jpg`` is frame 3 of description 12), in
folders of 1 000 descriptions so that no folder grows without end; the
database keeps that relative name, so the database's folder can move.

Every write and read walks the folder chain with ``O_NOFOLLOW``, relative
to descriptors: a symbolic link planted anywhere inside the thumbnails folder
is refused, never followed (the rule ``output.sidecars.write_atomic`` keeps for
sidecars). A stored name is used only if it has the shape this module writes,
so a row edited by hand cannot point outside the folder.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

SUFFIX = ".thumbnails"
SHARD = 1000
NAME = re.compile(r"^(\d{4,})/(\d+)-(\d+)\.jpg$")


def folder_for(database: str | os.PathLike) -> Path:
    """``rkvideo.db`` → ``rkvideo.db.thumbnails`` in the same folder."""
    database = Path(database)
    return database.with_name(database.name + SUFFIX)


def name(description_id: int, seq: int) -> str:
    """The file of frame ``seq`` of description ``description_id``, relative to the folder."""
    return f"{description_id // SHARD:04d}/{description_id}-{seq}.jpg"


class ThumbnailFiles:
    """Writes, opens and removes the files of one thumbnails folder (created on first write)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def write(self, description_id: int, seq: int, data: bytes) -> str:
        """Write one JPEG; returns its name relative to the folder. Raises OSError (a link in the way, a
        full disk)."""
        relative = name(description_id, seq)
        shard, file = relative.split("/")
        with self._folder(create=True) as root, _subfolder(root, shard, create=True) as where:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=where)
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
        return relative

    def open(self, relative: str):
        """The stored file ``relative`` opened for reading (a binary file object), or None when the name
        is not one this module writes, the file is missing, or a link stands in the way."""
        match = NAME.match(relative or "")
        if not match:
            return None
        shard, file = relative.split("/")
        try:
            with self._folder() as root, _subfolder(root, shard) as where:
                fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=where)
        except OSError:
            return None
        return open(fd, "rb", closefd=True)

    def remove(self, names) -> int:
        """Remove the named files (missing ones are fine); returns how many were removed."""
        removed = 0
        for relative in names:
            if not NAME.match(relative or ""):
                continue
            shard, file = relative.split("/")
            try:
                with self._folder() as root, _subfolder(root, shard) as where:
                    os.unlink(file, dir_fd=where)
                    removed += 1
            except OSError:
                continue
        return removed

    @contextlib.contextmanager
    def _folder(self, create: bool = False):
        if create:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.folder, 0o755)
        fd = _open_dir(str(self.folder))
        try:
            yield fd
        finally:
            os.close(fd)


@contextlib.contextmanager
def _subfolder(parent: int, entry: str, create: bool = False):
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(entry, 0o755, dir_fd=parent)
    fd = _open_dir(entry, parent)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_dir(path: str, dir_fd: int | None = None) -> int:
    """A folder's descriptor; a symbolic link in its place fails with ELOOP/ENOTDIR."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
