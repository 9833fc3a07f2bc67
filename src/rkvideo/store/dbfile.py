"""The database file itself, apart from what is in it: which file it is, who may write it, and
whether it is still the file the store opened.

Why apart from the queries (``sqlite.py``): these rules are about processes and paths, not SQL.

* One file, many names. A symbolic link to the file or to a folder above it, ``..`` or a relative
  path all reach the same database (SQLite resolves links itself and keeps its -wal and -shm files
  beside the real file). So the lock file is named after the *real* path: the one-daemon-per-database
  guard holds whatever path names the database. (Hard links are not covered; SQLite does not
  support them either, its -wal file is named after the path.)
* Still the same file. A database deleted, or replaced by another file, while a process has it open
  keeps working for that process as a file nobody else can open: everything written to it is lost.
  ``Identity`` records the device and inode at open; every write transaction checks them before it
  commits, so a daemon stops with a clear error instead of reporting "done" into an unlinked file.
* Waiting for another writer. SQLite's own busy timeout is kept short (``BUSY_SLICE``): a write that
  finds the lock taken tries again, and between tries calls the store's ``on_busy(waited)``, which
  may raise to give up. The daemon waits as long as it takes, keeps the watchdog fed and notices a
  stop there; a command gives up after ``BUSY_LIMIT`` seconds (``give_up_after``).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .base import StoreError

log = logging.getLogger(__name__)

BUSY_SLICE = 0.25       # seconds SQLite itself waits for a lock before the store looks up (on_busy)
BUSY_LIMIT = 30.0       # seconds a command waits for another process's lock before it gives up
STILL_WAITING = 60.0    # seconds between "still waiting" log lines

OnBusy = Callable[[float], None]    # on_busy(seconds waited so far); raises to stop waiting

# Files SQLite keeps beside the database (WAL mode, and a rollback journal if another tool used one).
COMPANIONS = ("-wal", "-shm", "-journal")


def real(path: str | os.PathLike) -> Path:
    """The database's real path: links, ``..`` and relative parts resolved."""
    return Path(os.path.realpath(path))


def lock_path(path: str | os.PathLike) -> Path:
    """``<real path>.lock``: one lock file per database file, whatever path names it."""
    resolved = real(path)
    return resolved.with_name(resolved.name + ".lock")


def files(path: str | os.PathLike) -> list[str]:
    """Every file rkvideo and SQLite keep for the database at ``path``, as real paths."""
    resolved = str(real(path))
    return [resolved, *(resolved + suffix for suffix in COMPANIONS), str(lock_path(path))]


def give_up_after(limit: float, path: str | os.PathLike) -> OnBusy:
    """An ``on_busy`` for commands: stop waiting after ``limit`` seconds with a ``StoreError``."""
    def on_busy(waited: float) -> None:
        if waited >= limit:
            raise StoreError(f"{path}: the database is locked by another process (waited {limit:g}s); "
                             f"try again when it is done")
    return on_busy


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY: another connection holds the lock this one needs."""
    code = getattr(exc, "sqlite_errorcode", None)       # Python 3.11+
    return code == sqlite3.SQLITE_BUSY if code is not None else "database is locked" in str(exc)


def patiently(attempt: Callable, path, on_busy: OnBusy):
    """``attempt()`` until SQLite stops answering SQLITE_BUSY; ``on_busy(waited)`` between tries.
    The first wait is logged, and then once a minute, and the end of a logged wait."""
    start = told = None
    while True:
        try:
            value = attempt()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        else:
            if start is not None:
                log.info("%s: the lock was released after %.1fs; going on", path, time.monotonic() - start)
            return value
        now = time.monotonic()
        if start is None:
            start = told = now
            log.warning("%s: the database is locked by another process; waiting for it", path)
        elif now - told >= STILL_WAITING:
            told = now
            log.warning("%s: still waiting for another process's lock on the database (%.0fs)", path, now - start)
        on_busy(now - start)


class Identity:
    """The device and inode of the database file when it was opened."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        self.key = self._key()

    def _key(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        """``StoreError`` if the file at the path is gone or is another file now."""
        key = self._key()
        if key == self.key:
            return
        how = "deleted" if key is None else "replaced"
        raise StoreError(f"{self.path}: the database file was {how} while rkvideo had it open; this change "
                         f"was not saved (start rkvideo again: it opens the file now at this path, or "
                         f"creates a new database)")


def open_lock_file(path: str | os.PathLike) -> int:
    """``<real path>.lock``, never through a symbolic link planted at that name (it would be created
    or truncated wherever the link points)."""
    name = lock_path(path)
    try:
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if os.path.islink(name):
            raise StoreError(f"{name} is a symbolic link: remove it (rkvideo never writes through one)") from None
        raise StoreError(f"{name}: cannot open the lock file ({e.strerror})") from None


@contextlib.contextmanager
def creation_lock(path: str | os.PathLike):
    """A POSIX lock on byte 1 of the lock file while the schema is created; the close releases it.

    Not ``flock``: the daemon holds an exclusive ``flock`` on the same file for its whole life, and
    the two kinds of lock do not conflict (Linux, local file systems), so a process that found no
    schema never waits for a daemon that has started meanwhile and created it.
    """
    fd = open_lock_file(path)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1)
        yield fd
    finally:
        os.close(fd)


def lock_daemon(path: str | os.PathLike) -> int:
    """Only one daemon per database file: returns the descriptor that holds the lock until it is
    closed or the process ends (even by kill -9); ``StoreError`` while another daemon holds it.

    ``flock``, not ``lockf``: a POSIX lock belongs to the process, and the kernel drops it as soon as
    *any* descriptor of that file is closed in the process (``creation_lock`` does that); a ``flock``
    belongs to this open file.
    """
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"{path}: another `rkvideo watch` is using this database "
                         f"(stop it first, or use another --db)") from None
    return fd
