"""Queue decisions: what one file, once settled, moved or deleted, does to its job.

Why one place: every rule about which files become jobs — and what happens to
a job when its file changes under it — is written here, on the main thread,
and nowhere else. The watcher only notices files; the worker only runs jobs.

* A file is queued only when its container opens (``media.probe``); a bad
  file (empty, damaged, no video stream, unreadable, a folder or a pipe named
  like a video) is kept as a ``failed`` or ``skipped`` job with the reason, so
  it is reported once and never blocks the queue.
* Files are fingerprinted when queued, so a copy under another name is
  ``skipped`` pointing at the original, and a file renamed while the daemon
  was down keeps its job and description (found by content).
* A deleted file leaves the queue; a described one keeps its job, because
  descriptions outlive their recordings (``JobStore.drop`` says which). A
  copy of an undescribed original is queued in its place.
* A running job is left to its worker: a change to its file is looked at
  again once the worker is done with it.
* A symbolic link to a file outside the watched folders is ``skipped``, not
  described (``Roots.reaches_out``), unless ``watch.follow_symlinks``.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from enum import Enum

from .. import media
from ..store import Job, JobStore, Status, db_text, fingerprint, same_content, valid_name
from .roots import Roots

log = logging.getLogger(__name__)


class Decision(str, Enum):
    """What intake did with a settled file."""
    QUEUED = "queued"           # a new job, or the job reset for new content
    SKIPPED = "skipped"         # a copy of another job, or not a video file
    FAILED = "failed"           # a bad file, kept with the reason
    RENAMED = "renamed"         # found by content: an earlier job follows it
    UNCHANGED = "unchanged"     # its job already records it as it is
    LATER = "later"             # its job is running: look again once the worker is done
    IGNORED = "ignored"         # cannot be stored at all (a name that is not UTF-8)


LINK_OUT = ("symbolic link to a file outside the watched folders (not described; set [watch] follow_symlinks = "
            "true to describe such files)")


def unchanged(job, st) -> bool:
    """The job's recorded size and mtime are the file's."""
    return job.size == st.st_size and job.mtime is not None and abs(job.mtime - st.st_mtime) < 1e-6


def reason(exc: Exception, path: str) -> str:
    """An error without the file name in front: the job row and the log line name the file already."""
    text = str(exc)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def drop_gone(store: JobStore, job, running: bool = False) -> str:
    """The file of ``job`` was deleted: the job leaves the queue (``JobStore.drop`` says when it stays),
    and a copy of an undescribed original is queued in its place. Logs what happened."""
    what, promoted = store.drop(job.id, running=running)
    if what == "dropped":
        log.info("dropped %s [job %d]: file deleted", job.path, job.id)
    elif what == "kept" and job.status != Status.DONE:
        log.info("done %s [job %d]: file deleted before it was described again; its earlier description is kept",
                 job.path, job.id)
    if promoted:
        log.info("queued %s [job %d]: its original was deleted before it was described", promoted.path,
                 promoted.id)
    return what


class Intake:
    """The main thread's writes to the store, one file at a time."""

    def __init__(self, store: JobStore, roots: Roots, *, notices=None, wake: Callable[[], None] = lambda: None):
        self.store, self.roots = store, roots
        # A bad file is a failed job: its error message goes to the outbox with it (rkvideo.notify).
        self.notices, self.wake = notices, wake
        self.bad_names: set = set()     # said once per run

    def known(self, path: str, st) -> bool:
        """``path`` has a job that records it as it is now: nothing to wait for."""
        job = self.store.job_at(path)
        return job is not None and unchanged(job, st)

    def settled(self, path: str, st) -> Decision:
        """A file that stopped changing: queue it, or record why not (bad file, duplicate, same as before)."""
        if not valid_name(path):
            # SQLite text must be UTF-8; such a file cannot even be listed. Say so once per run.
            if path not in self.bad_names:
                self.bad_names.add(path)
                log.error("skipped %s: file name is not valid UTF-8 (rename the file)", db_text(path))
            return Decision.IGNORED
        if self.roots.reaches_out(path):
            return self.record(path, Status.SKIPPED, LINK_OUT, st)
        if stat.S_ISDIR(st.st_mode):
            return self.record(path, Status.SKIPPED, "is a folder, not a video file")
        if not stat.S_ISREG(st.st_mode):
            return self.record(path, Status.SKIPPED, "not a regular file (a pipe, socket or device)")
        job = self.store.job_at(path)
        if job is not None and unchanged(job, st):
            return Decision.UNCHANGED
        if job is not None and job.status == Status.RUNNING:
            return Decision.LATER           # changed under the worker: look again once it is done
        if st.st_size == 0:
            return self.record(path, Status.FAILED, "empty file (0 bytes)", st)
        try:
            digest = fingerprint(path)
        except OSError as exc:
            fix = " (let the rkvideo user read it, then run `rkvideo retry`)" \
                if isinstance(exc, PermissionError) else ""
            return self.record(path, Status.FAILED, f"cannot read: {exc.strerror}{fix}", st)
        if job is not None and job.hash == digest:
            self.store.touch(job.id, st.st_size, st.st_mtime)
            return Decision.UNCHANGED
        original = self.store.original(digest, path)
        if original is not None:
            # Found by content where the original was: a rename (only an original in a folder this
            # daemon watches can be known to be gone — another board's folder is not mounted here).
            if job is None and self.roots.root_of(original.path) and not os.path.lexists(original.path):
                self.store.move(original.id, path, root=self.roots.root_of(path))
                self.store.touch(original.id, st.st_size, st.st_mtime)
                log.info("renamed %s -> %s [job %d] (found by content)", original.path, path, original.id)
                return Decision.RENAMED
            return self.record(path, Status.SKIPPED, same_content(original), st, digest=digest,
                               duplicate_of=original.id)
        try:
            info = media.probe(path)
        except media.MediaError as exc:
            return self.record(path, Status.FAILED, reason(exc, path), st, digest=digest)
        job_id = self.store.put(path, Status.QUEUED, root=self.roots.root_of(path), size=st.st_size,
                                mtime=st.st_mtime, digest=digest, duration=info.duration)
        log.info("queued %s [job %d] (%.1fs of video)", path, job_id, info.duration)
        return Decision.QUEUED

    def record(self, path: str, status: Status, error: str, st=None, digest=None, duplicate_of=None) -> Decision:
        """A file that will not be described: kept as a failed or skipped job with the reason."""
        decision = Decision.SKIPPED if status == Status.SKIPPED else Decision.FAILED
        job = self.store.job_at(path)
        if job is not None and job.status == status and job.error == error and (st is None or unchanged(job, st)):
            return decision
        messages = None
        if status == Status.FAILED and self.notices:
            failed = Job(id=0, path=path, root=self.roots.root_of(path), size=st.st_size if st else None,
                         mtime=st.st_mtime if st else None, status=status, error=error)
            messages = self.notices.failed(failed, error)
        job_id = self.store.put(path, status, root=self.roots.root_of(path), size=st.st_size if st else None,
                                mtime=st.st_mtime if st else None, digest=digest, error=error,
                                duplicate_of=duplicate_of, messages=messages)
        if messages:
            self.wake()
        level = logging.INFO if status == Status.SKIPPED else logging.ERROR
        log.log(level, "%s %s [job %d]: %s", status, db_text(path), job_id, error)
        return decision

    # ------------------------------------------------------------ moves and deletes

    def moved(self, src: str, dest: str, followed: bool) -> None:
        """A file renamed from ``src`` to ``dest`` (``followed``: a file the daemon looks at): its job
        follows it, or is forgotten when it left the watched files."""
        job = self.store.job_at(src)
        if followed and job is not None and self.store.job_at(dest) is None:
            self.store.move(job.id, dest, root=self.roots.root_of(dest))
            log.info("renamed %s -> %s [job %d]", src, dest, job.id)
        elif job is not None:
            self.forget(job)

    def moved_folder(self, src: str, dest: str) -> None:
        """A renamed folder: the jobs below it follow."""
        moved = self.store.move_folder(src, dest, root=self.roots.root_of(dest))
        if moved:
            log.info("renamed folder %s -> %s (%d jobs follow)", src, dest, moved)

    def deleted(self, path: str, is_dir: bool) -> None:
        if is_dir:
            for job in self.store.jobs_under(path):
                self.forget(job)
        job = self.store.job_at(path)
        if job is not None:
            self.forget(job)

    def forget_missing(self) -> None:
        """At start-up: queued, failed or skipped jobs in the watched folders whose file is gone have
        nothing left to do. Only these folders: a shared store holds other boards' folders too."""
        for root in self.roots:
            for job in self.store.jobs_under(str(root)):
                if valid_name(job.path) and not os.path.lexists(job.path):
                    self.forget(job)

    def forget(self, job) -> None:
        # Done jobs stay: their descriptions outlive the recording. A running job is left to its worker.
        if job.status in (Status.QUEUED, Status.FAILED, Status.SKIPPED):
            drop_gone(self.store, job)
