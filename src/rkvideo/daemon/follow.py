"""inotify watches on the watched folders, made again when a folder is replaced.

Why: an inotify watch belongs to a folder (an inode), not to its path. A watched folder that is
deleted and made again, moved away and replaced, or a network share or USB disk unmounted and
mounted again at the same path, leaves the old watch on the old folder (or on nothing): the new
folder's files would wait for the rescan, 10 minutes away, every time. So each watched folder's
device and inode are compared with those the watch was made for, and whether its watch still runs
(inotify ends it when the folder is deleted, and the inode number may be reused at once), about
once a second; a folder that changed gets a new watch, and the caller scans it. A folder that is
gone is logged once and looked for again until it is back.

Events arrive on watchdog's thread and are only handed on (``EventForwarder``); everything else runs
on the main thread.
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import time

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0      # seconds between checks of the watched folders themselves


class EventForwarder:
    """watchdog's event handler: runs on watchdog's thread and only hands each event to the main loop."""

    def __init__(self, events: queue.SimpleQueue):
        self.events = events

    def dispatch(self, event) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.events.put((event.event_type, os.fsdecode(event.src_path),
                         os.fsdecode(getattr(event, "dest_path", "") or ""), event.is_directory))


def identity(folder: str):
    """(device, inode) of ``folder``, or None when it is not there (or not reachable)."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Follower:
    """The inotify watches of ``folders`` (watchdog), their events put on ``events``."""

    def __init__(self, folders, recursive: bool, events: queue.SimpleQueue):
        self.folders = [str(f) for f in folders]
        self.recursive, self.events = recursive, events
        self.observer = None
        self.watches: dict = {}         # folder -> (watchdog's ObservedWatch, identity it was made for)
        self.gone: set = set()          # folders found missing, logged once
        self.checked = time.monotonic()

    def start(self) -> None:
        # Imported here: `rkvideo --help` and the reading commands need no inotify machinery.
        from watchdog.observers import Observer
        self.observer = Observer()
        for folder in self.folders:
            self.add(folder)
        try:
            self.observer.start()
        except OSError as exc:
            raise OSError(f"cannot follow the folders: {exc} (too many folders for inotify? raise "
                          f"fs.inotify.max_user_watches with sysctl)") from None

    def add(self, folder: str) -> None:
        known = identity(folder)
        watch = self.observer.schedule(EventForwarder(self.events), folder, recursive=self.recursive)
        self.watches[folder] = (watch, known)

    def running(self, watch) -> bool:
        """inotify still reports on this watch (it ends when its folder is deleted)."""
        return any(e.watch == watch and e.is_alive() for e in self.observer.emitters)

    def check(self) -> list[str]:
        """The watched folders that were replaced and are watched again now (the caller scans them).
        Does its work about once a second; a call in between returns nothing."""
        if self.observer is None or time.monotonic() - self.checked < CHECK_EVERY:
            return []
        self.checked = time.monotonic()
        renewed = []
        for folder in self.folders:
            now = identity(folder)
            if now is None:
                if folder not in self.gone:
                    self.gone.add(folder)
                    log.warning("watched folder %s is gone (deleted or unmounted); waiting for it to come back",
                                folder)
                continue
            watch, known = self.watches[folder]
            if now == known and folder not in self.gone and self.running(watch):
                continue
            with contextlib.suppress(KeyError):       # already ended with its folder
                self.observer.unschedule(watch)
            try:
                self.add(folder)
            except OSError:             # gone again in between: the next check tries again
                self.gone.add(folder)
                continue
            self.gone.discard(folder)
            log.info("watching %s again (the folder was replaced: deleted, moved or mounted again)", folder)
            renewed.append(folder)
        return renewed

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()

    def join(self, timeout: float) -> None:
        if self.observer is not None:
            self.observer.join(timeout)
