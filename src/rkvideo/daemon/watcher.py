"""Noticing files: file-system events, the start-up scan, settling and the periodic rescan.

Why this shape:

* A file is handed to intake only when it has stopped changing (size and
  mtime the same for ``watch.settle_seconds``), so a recording still being
  written is never captioned half-way. The only in-memory state is the list
  of files still settling (``pending``); the start-up scan rebuilds it, so a
  crash loses nothing.
* Events arrive on watchdog's thread and are only queued there; everything
  else runs on the main thread, in order, so a rename and a delete of the same
  file are handled as they happened.
* inotify misses writes made by other machines to a network share and drops
  events when its queue overflows (thousands of files at once), so the folders
  are rescanned every ``RESCAN`` seconds; a rescan costs one stat and one
  indexed lookup per file, so nothing stays unnoticed for long.
* Scanning also removes the temporary files of sidecar writes a kill
  interrupted (``output.remove_stale_temps``), beside the recordings or under
  ``output.dir``.
* The caller's ``ping`` is called once per file while scanning and queueing: a
  first start on a large archive fingerprints and probes thousands of files in
  one go, longer than systemd's ``WatchdogSec``.
* The daemon's own files (``own``: its database, lock file, sidecars, output
  folder) are never looked at, whatever the patterns say; a watched folder that
  is replaced (deleted and made again, remounted) is watched and scanned again
  (``follow.Follower``); after every full scan the caller's ``after_scan`` runs
  (the daemon writes the sidecars that could not be written before).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import queue
import time
from collections.abc import Callable

from .. import errors, output
from ..store import Status, StoreError
from .follow import Follower
from .intake import Decision, Intake
from .roots import Roots

log = logging.getLogger(__name__)

RESCAN = 600.0      # seconds between full rescans of the folders


class Matcher:
    """File-name patterns, case-insensitive (cameras write .MP4 as often as .mp4). Hidden names never match:
    they are temporary files of copy tools and of our own sidecar writer."""

    def __init__(self, patterns):
        self.patterns = [p.lower() for p in patterns]

    def __call__(self, path: str) -> bool:
        name = os.path.basename(path)
        if name.startswith("."):
            return False
        name = name.lower()
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


def removed(paths: list) -> None:
    for path in paths:
        log.info("removed %s: a sidecar write was interrupted there", path)


class Watcher:
    """Follows ``roots`` for files matching ``watch.patterns`` and hands settled ones to ``intake``.

    ``ping()`` is called once per file scanned or queued; ``stopping()`` is true once the daemon is
    asked to stop (a batch being queued stops early). ``rescan``: seconds between full rescans, None
    for none (``--once``). ``own(path)``: the path is one of the daemon's own files (``own.OwnFiles``);
    ``after_scan()``: called after each full scan.
    """

    def __init__(self, config, roots: Roots, intake: Intake, *, ping: Callable[[], None] = lambda: None,
                 stopping: Callable[[], bool] = lambda: False, rescan: float | None = RESCAN,
                 own: Callable[[str], bool] = lambda path: False, after_scan: Callable[[], None] = lambda: None):
        self.config, self.roots, self.intake = config, roots, intake
        self.ping, self.stopping, self.rescan = ping, stopping, rescan
        self.own, self.after_scan = own, after_scan
        self.matcher = Matcher(config.watch.patterns)
        self.settle = config.watch.settle_seconds
        self.pending: dict = {}          # path -> [(size, mtime_ns), monotonic time it was last seen changing]
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.follower: Follower | None = None
        self.scanned = time.monotonic()
        # Sidecars beside the recordings: the scan also clears temporary files of interrupted writes.
        self.sidecars_beside = bool(config.output.sidecars) and not config.output.dir

    # ------------------------------------------------------------ events

    def follow(self) -> None:
        """Start receiving file-system events (inotify) for every watched folder."""
        self.follower = Follower(self.roots, self.config.watch.recursive, self.events)
        self.follower.start()

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()

    def join(self, timeout: float) -> None:
        if self.follower is not None:
            self.follower.join(timeout)

    def look_again(self, path: str) -> None:
        """Treat ``path`` as changed: it settles again before intake sees it. Safe from any thread."""
        self.events.put(("modified", path, "", False))

    # ------------------------------------------------------------ the main loop's step

    def step(self) -> int:
        """One turn of the main loop: a rescan when due, the queued events, the files that settled.
        Returns how many files settled (the worker has something to look at)."""
        if self.rescan is not None and time.monotonic() - self.scanned >= self.rescan:
            self.scan_all()
        if self.follower is not None:
            for folder in self.follower.check():      # replaced: what is in it now was never announced
                self.scan(folder)
        self.drain()
        return self.settle_pending()

    def scan_all(self) -> None:
        for root in self.roots:
            self.scan(str(root))
        self.scanned = time.monotonic()
        self.after_scan()

    def scan(self, folder: str) -> None:
        """Every matching file (and folder named like a video) at or below ``folder`` that is followed."""
        if self.own(folder):
            return
        if folder not in self.roots.paths:
            # A folder created or moved in after the start.
            if not self.roots.followed(folder):
                return
            if self.matcher(folder):
                self.watch(folder)          # a folder named like a video: recorded as skipped
            if not self.roots.recursive:
                return                      # not recursive: only the watched folders' own files
        for dirpath, dirnames, filenames in os.walk(folder, onerror=lambda e: log.error("%s", e)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not self.own(f"{dirpath}/{d}"))
            if self.sidecars_beside:
                removed(output.remove_stale_temps(dirpath, filenames, self.matcher))
            for name in dirnames + sorted(filenames):
                self.ping()         # a stat and a lookup per file: thousands of them add up
                if self.matcher(name):
                    self.watch(os.path.join(dirpath, name))
            if not self.roots.recursive:
                break

    def clean_output_dir(self) -> None:
        """Temporary files of sidecar writes that a kill interrupted under ``output.dir`` (the scan
        does this beside recordings)."""
        if not (self.config.output.sidecars and self.config.output.dir):
            return
        out = self.config.resolve_path(self.config.output.dir)
        for dirpath, _, filenames in os.walk(out):
            removed(output.remove_stale_temps(dirpath, filenames, self.matcher))

    def drain(self) -> None:
        while True:
            try:
                kind, src, dest, is_dir = self.events.get_nowait()
            except queue.Empty:
                return
            log.debug("event %s %s%s", kind, src, f" -> {dest}" if dest else "")
            if kind == "moved":
                self.moved(src, dest, is_dir)
            elif kind == "deleted":
                self.deleted(src, is_dir)
            elif is_dir:
                if kind == "created":
                    self.scan(src)
            elif self.matcher(src):
                self.watch(src)

    def watch(self, path: str) -> None:
        """Start waiting for ``path`` to settle, unless it is already known as it is (or our own)."""
        if path in self.pending or self.own(path):
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.intake.record(path, Status.FAILED, f"cannot open: {exc.strerror}")
            return
        if self.intake.known(path, st):
            return
        self.pending[path] = [(st.st_size, st.st_mtime_ns), time.monotonic()]

    def moved(self, src: str, dest: str, is_dir: bool) -> None:
        if is_dir:
            self.intake.moved_folder(src, dest)
            self.forget_below(src)
            self.scan(dest)
            return
        self.pending.pop(src, None)
        followed = self.matcher(dest) and self.roots.followed(dest)
        self.intake.moved(src, dest, followed)
        if followed:
            self.watch(dest)

    def deleted(self, path: str, is_dir: bool) -> None:
        if is_dir:
            self.forget_below(path)
        self.pending.pop(path, None)
        self.intake.deleted(path, is_dir)

    def forget_below(self, folder: str) -> None:
        for path in [p for p in self.pending if p.startswith(folder + "/")]:
            del self.pending[path]

    # ------------------------------------------------------------ settling

    def settle_pending(self) -> int:
        """Hand every file unchanged for ``settle`` seconds to intake, oldest recording first."""
        now = time.monotonic()
        ready = []
        for path, entry in list(self.pending.items()):
            self.ping()
            try:
                st = os.stat(path)
            except OSError:
                del self.pending[path]
                continue
            key = (st.st_size, st.st_mtime_ns)
            if key != entry[0]:
                entry[0], entry[1] = key, now
            elif now - entry[1] >= self.settle:
                del self.pending[path]
                ready.append((st.st_mtime_ns, path, st))
        for _, path, st in sorted(ready):       # oldest recording first
            if self.stopping():
                break
            self.ping()                         # fingerprint and probe: can be slow on SD cards and NFS
            self.hand_over(path, st)
        return len(ready)

    def hand_over(self, path: str, st) -> None:
        try:
            decision = self.intake.settled(path, st)
        except (errors.Interrupted, StoreError):
            raise                       # a stop, or the database: not this file's fault
        except Exception as exc:        # noqa: BLE001 - a file must never crash-loop the service
            log.exception("%s: cannot be queued", path)
            self.intake.record(path, Status.FAILED, f"cannot be queued: {type(exc).__name__}: {exc}", st)
            return
        if decision is Decision.LATER:
            self.watch(path)

    def give_up(self) -> None:
        """``--once``: files still settling are left for the next run."""
        for path in sorted(self.pending):
            log.warning("%s: still being written, left for the next run", path)
        self.pending.clear()
