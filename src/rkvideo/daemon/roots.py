"""The watched folders, and which of them a path belongs to.

Why a record of its own: the watcher asks whether a path is followed at all,
intake records the folder a job came from (its ``root``; the store keeps the
path relative to it so boards that mount one share at different places agree
on a recording), and the worker nests sidecars under ``output.dir`` by the
folder's name. All three answer from the same list, given once.

Symbolic links: whoever may write into a watched folder could link to a file
they may not read (``/home/other/private.mp4``); describing it would put its
content into sidecars and search results they can read. So a file is
described only if its real path lies inside a watched folder
(``reaches_out``), unless ``[watch] follow_symlinks = true``. A hard link
cannot be told from the file itself; Linux refuses to make one to a file its
maker may not write (``fs.protected_hardlinks``, on by default).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..store.names import folder_name


class Roots:
    """Absolute, resolved folders, in the order they were given: a list, or a dict by name (``[watch]
    roots``). ``names`` (name -> folder) is what a shared store keys jobs by; a folder given without a
    name is called by its own name."""

    def __init__(self, folders, recursive: bool = True, follow_symlinks: bool = False):
        named = list(folders.items()) if isinstance(folders, dict) else [(folder_name(str(f)), f) for f in folders]
        self.folders = [Path(f) for _, f in named]
        self.paths = {str(f) for f in self.folders}
        self.real = [os.path.realpath(f) for f in self.folders]
        self.names: dict = {}
        for name, folder in named:
            self.names.setdefault(name, str(folder))
        self.recursive, self.follow_symlinks = recursive, follow_symlinks

    def __iter__(self):
        return iter(self.folders)

    def __str__(self) -> str:
        return ", ".join(map(str, self.folders))

    def root_of(self, path: str) -> str | None:
        """The watched folder ``path`` is in (its job records it), the innermost one if they nest."""
        return max((root for root in self.paths if path.startswith(f"{root}/")), key=len, default=None)

    def first_containing(self, path: str) -> Path | None:
        """The first folder, in the order given, that ``path`` is below (sidecars under output.dir
        are nested by its name)."""
        return next((r for r in self.folders if path.startswith(f"{r}/")), None)

    def followed(self, path: str) -> bool:
        """``path`` is where the daemon looks: directly in a watched folder, or anywhere below one if
        ``watch.recursive``."""
        if self.recursive:
            return any(path.startswith(f"{root}/") for root in self.paths)
        return os.path.dirname(path) in self.paths

    def reaches_out(self, path: str) -> bool:
        """``path`` leads out of the watched folders (a symbolic link to a file elsewhere) and links are
        not to be followed (``watch.follow_symlinks``)."""
        if self.follow_symlinks:
            return False
        real = os.path.realpath(path)
        return not any(real.startswith(f"{root}/") for root in self.real)
