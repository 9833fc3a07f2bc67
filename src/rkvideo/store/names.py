"""Watched folders by name, so that boards mounting one share at different places agree on a recording.

Why names: board A sees ``/mnt/nas/cameras/door/0800.mp4`` and board B sees
``/media/cams/door/0800.mp4``; both are ``cameras/door/0800.mp4`` once the
folder has a name (``[watch] roots = { cameras = "/mnt/nas/cameras" }``, or the
folder's own name). A store shared by several boards keys its jobs by that
name and the path below it, and turns them back into this board's path when
it hands a job out. A path outside every named folder keeps its absolute form
as its key (it starts with ``/``, a name never does, so the two never collide).
"""
from __future__ import annotations

import os
import re

from ..config import ROOT_NAME
from .base import StoreError, db_text


def check_name(name: str, where: str = "[watch] roots") -> str:
    """A root name is one plain word: letters, digits, ``.``, ``_``, ``-`` (no ``/``)."""
    if not ROOT_NAME.fullmatch(name):
        raise StoreError(f"{where}: {name!r} is not a usable folder name (letters, digits, '.', '_', '-'; "
                         f"no '/')")
    return name


def folder_name(folder: str) -> str:
    """The name a folder gets when none is configured: its own name, made usable."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(folder.rstrip("/"))).lstrip("._-")
    return name or "root"


class RootNames:
    """name -> absolute folder, as this process sees it; looked up both ways."""

    def __init__(self, roots: dict | None = None):
        self.folders = {check_name(name): db_text(str(folder)).rstrip("/") or "/"
                        for name, folder in (roots or {}).items()}

    def __bool__(self) -> bool:
        return bool(self.folders)

    def names(self) -> list:
        return sorted(self.folders)

    def name_of(self, folder: str) -> str:
        """The name of ``folder``: the configured one, else the folder's own name."""
        folder = db_text(folder).rstrip("/")
        for name, known in self.folders.items():
            if known == folder:
                return name
        return folder_name(folder)

    def split(self, path: str) -> tuple[str | None, str | None]:
        """(root name, path below it) for an absolute path, by the innermost named folder; (None, None)
        outside all of them."""
        path = db_text(path)
        best = None
        for name, folder in self.folders.items():
            if path.startswith(folder + "/") and (best is None or len(folder) > len(self.folders[best])):
                best = name
        if best is None:
            return None, None
        return best, path[len(self.folders[best]) + 1:]

    def key(self, path: str) -> str:
        """The store's key for a path: ``name/relpath`` inside a named folder, else the absolute path."""
        name, rel = self.split(path)
        return f"{name}/{rel}" if name else db_text(path)

    def local(self, root: str | None, relpath: str | None, path: str) -> str:
        """This board's path for a job stored as (root, relpath), or the stored ``path`` when this board
        does not know that root."""
        if root is not None and relpath is not None and root in self.folders:
            return f"{self.folders[root]}/{relpath}"
        return path


def folder_of(path: str, relpath: str | None) -> str | None:
    """The folder a path was found in, from its path below that folder (None when unknown)."""
    if relpath and path.endswith("/" + relpath):
        return path[: -len(relpath) - 1]
    return None
