"""What a job store is, independent of the database behind it: statuses, the job record, the protocol.

Why a protocol: the daemon and the commands need a durable queue and a
searchable archive, not SQLite. Today one SQLite file serves one board
(``sqlite.py``); several boards sharing one queue will need a server database.
Both implement ``JobStore``; the callers never see SQL, a connection or a row.

A job is keyed by its absolute path (what the daemon sees) and also records
the watched folder it came from (``root``) and its path below it
(``relpath``), so that boards that mount one share at different places can
agree on which recording a job is.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Protocol, runtime_checkable

from ..errors import RuntimeFailure

# The oldest rkvideo schema that can read and write a database this code makes (see migrations.py).
SCHEMA_VERSION = 1

# Every daemon reports to the store this often (``JobStore.report``); one silent for STALE_SECONDS
# while not stopped is shown as gone by `rkvideo workers` (its jobs are recovered by their locks, not this).
REPORT_SECONDS = 5.0
STALE_SECONDS = 30.0


class Status(str, Enum):
    """Where a job is. ``done`` and ``skipped`` are final; ``failed`` is final until ``retry``."""

    QUEUED = "queued"       # waiting for a worker (``not_before`` may hold it back)
    RUNNING = "running"     # a worker is describing it
    DONE = "done"           # described: at least one description row
    FAILED = "failed"       # given up (bad file, or out of attempts); ``error`` says why
    SKIPPED = "skipped"     # never described: a copy of another job (``duplicate_of``) or not a video

    def __str__(self) -> str:
        # The value, in logs and f-strings alike (3.11 would print "Status.QUEUED").
        return self.value


class StoreError(RuntimeFailure):
    """The database cannot be opened or used; the message names the file and the fix."""


class StoreUnavailable(StoreError):
    """The database is there but cannot be used just now: another process holds a lock on it, or the
    disk that holds it is full. Unlike a wrong path or a foreign file, trying again later can help."""
class LostClaim(StoreError):
    """This worker no longer holds the job it claimed (its database session ended while it worked, and
    the job went back to the queue): its result must not be stored. Only that attempt is lost."""


# The keys of ``Job.as_dict``: the jobs table's columns in their order (the added ones last), so the
# JSON of `rkvideo list --json` keeps today's keys and order and equals ``SELECT * FROM jobs``.
COLUMNS = ("id", "path", "size", "mtime", "hash", "duration", "status", "attempts", "error", "duplicate_of",
           "not_before", "created_at", "updated_at", "started_at", "finished_at", "root", "relpath", "worker")


@dataclass
class Job:
    """One recording's place in the queue. Times are ISO 8601 UTC text (see ``now``)."""

    id: int
    path: str                       # absolute, as the daemon saw it (non-UTF-8 bytes as \\xNN, see db_text)
    root: str | None = None         # the watched folder it came from; None when not known
    relpath: str | None = None      # path below root; None when root is None or the path left it
    size: int | None = None
    mtime: float | None = None
    hash: str | None = None         # content fingerprint (see fingerprint)
    duration: float | None = None   # seconds of video
    status: Status = Status.QUEUED
    attempts: int = 0
    error: str | None = None        # last failure, or why the job is skipped or kept
    duplicate_of: int | None = None
    not_before: str | None = None   # a retry waits until then
    created_at: str | None = None
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None       # the worker that last claimed it
    descriptions: int | None = None  # how many descriptions it has; filled by ``jobs()`` only

    @classmethod
    def from_row(cls, row: dict) -> Job:
        """A job from a database row; columns the row lacks (a database not migrated yet) stay None."""
        names = {f.name for f in fields(cls)}
        job = cls(**{k: v for k, v in row.items() if k in names})
        job.status = Status(job.status)
        return job

    def as_dict(self) -> dict:
        """The job as JSON-ready data (``rkvideo list --json``): every column, plus ``descriptions``
        when it was counted."""
        data = {name: getattr(self, name) for name in COLUMNS}
        data["status"] = self.status.value
        if self.descriptions is not None:
            data["descriptions"] = self.descriptions
        return data


@dataclass(frozen=True)
class Outgoing:
    """One message for one notification target, kept in the outbox until it is delivered.

    ``target``: the key of the target (``notify`` names them, e.g. ``mqtt://host:1883`` or a webhook
    URL); ``message``: the message's stable id (the same on every retry, so receivers can drop
    duplicates); ``topic``: the MQTT topic (None for a webhook); ``payload``: the JSON text sent;
    ``retain``: MQTT's retain flag. Rows of one target are delivered in the order they were written.
    """

    target: str
    message: str
    payload: str
    topic: str | None = None
    retain: bool = False
    job_id: int | None = None


# Writes that change a job can put messages in the outbox in their own transaction: a function of
# the id just written (the new description's for ``finish``, the job's for ``put`` and ``fail``)
# that returns the messages. Nothing is kept of one unless the whole transaction commits.
Messages = Callable[[int], Iterable[Outgoing]]


@dataclass
class MissingSidecar:
    """A sidecar of a described recording that could not be written (a full disk, a folder in the way, a
    name too long): kept with its text until it is written (``rkvideo retry --sidecars``, or the daemon's
    next scan). The job itself is done: its description is in the database."""

    job_id: int
    kind: str                       # txt, json, vtt
    path: str                       # where it goes
    recording: str                  # the recording's path when the text was made
    text: str                       # the file's whole content
    error: str                      # why the last try failed
    failed_at: str | None = None


# How ``JobStore.browse`` marks the matched words in a snippet: control characters no caption uses, so a
# page can escape the text first and then turn them into highlights.
MARK, END = "\x02", "\x03"


@dataclass
class Filters:
    """What the web page narrows a search or the list of recordings to: one ``folder`` (the folder a
    recording is in), file times from ``since`` up to ``until`` (Unix seconds, the recording's mtime),
    and one ``status``. None = no condition."""

    folder: str | None = None
    since: float | None = None
    until: float | None = None
    status: Status | None = None


@runtime_checkable
class JobStore(Protocol):
    """A durable job queue and the descriptions, shared by the daemon and the commands.

    Every method is one transaction. Database failures raise ``StoreError``. ``put`` and the other
    writes key a job by its absolute path; ``root`` tells the store which watched folder it is in. A
    shared store keys it by the folder's name and the path below it instead (``open_store(roots=…)``)
    and hands out jobs with this board's paths.

    ``recover(worker, …)`` requeues only jobs whose worker is gone: on SQLite (one daemon per file) a
    worker id other than the caller's; on PostgreSQL a job whose claim lock no session holds.
    ``finish``/``fail``/``requeue``/``drop`` of a job the store claimed raise ``LostClaim`` when it
    was given back meanwhile. ``rows``/``load`` copy tables between stores (``rkvideo migrate-db``):
    rows with an id above ``after``, by id, a job's ``root`` as a folder path on both backends.
    """

    location: str       # where the store lives, for messages (a file path, or a URL without its password)
    # Called about four times a second while a write waits for another process's lock, with the seconds
    # waited; it may raise to stop waiting. The default gives up after 30 s with a StoreError. (SQLite;
    # a PostgreSQL server queues lock waits itself, and this store's transactions never hold one long.)
    on_busy: Callable[[float], None]

    # ---- queue writes
    def put(self, path: str, status: Status, *, root: str | None = None, size: int | None = None,
            mtime: float | None = None, digest: str | None = None, duration: float | None = None,
            error: str | None = None, duplicate_of: int | None = None, messages: Messages | None = None) -> int: ...
    def claim(self, worker: str) -> Job | None: ...
    def finish(self, job: Job, result, *, timings: dict | None = None, source: str = "watch",
               before_commit: Callable[[], None] | None = None, messages: Messages | None = None,
               missing_sidecars: list[MissingSidecar] = ()) -> int: ...
    def fail(self, job_id: int, error: str, retry_in: float | None = None, *,
             messages: Messages | None = None) -> None: ...
    def requeue(self, job_id: int, delay: float | None = None) -> None: ...
    def drop(self, job_id: int, running: bool = False) -> tuple[str, Job | None]: ...
    def move(self, job_id: int, path: str, *, root: str | None = None) -> None: ...
    def move_folder(self, src: str, dest: str, *, root: str | None = None) -> int: ...
    def touch(self, job_id: int, size: int, mtime: float) -> None: ...
    def recover(self, worker: str, max_attempts: int, *,
                messages: Callable[[Job], Iterable[Outgoing]] | None = None) -> tuple[list[Job], list[Job]]: ...
    def retry(self, ids: list[int] | None = None, statuses: tuple = (Status.FAILED,)) -> int: ...
    def save_result(self, result) -> int: ...
    def sidecar_written(self, job_id: int, kind: str) -> None: ...
    def sidecar_failed(self, job_id: int, kind: str, error: str) -> None: ...
    def keep_event(self, job_id: int, event) -> int: ...

    # ---- reads
    def search(self, query: str, limit: int = 20, raw: bool = False) -> list[dict]: ...
    def job(self, job_id: int) -> Job | None: ...
    def job_at(self, path: str) -> Job | None: ...
    def jobs(self, status: Status | None = None) -> list[Job]: ...
    def jobs_under(self, folder: str) -> list[Job]: ...
    def counts(self) -> dict[Status, int]: ...
    def descriptions(self, job_id: int) -> list[dict]: ...
    def events(self, description_id: int) -> list[dict]: ...
    def kept_events(self, job_id: int) -> list[dict]: ...
    def search_events(self, query: str, limit: int = 20, raw: bool = False) -> list[dict]: ...
    def original(self, digest: str, path: str) -> Job | None: ...
    def missing_sidecars(self, ids: list[int] | None = None) -> list[MissingSidecar]: ...

    # ---- the outbox (notifications waiting for delivery; see Outgoing)
    def outbox(self, target: str | None = None, limit: int | None = None) -> list[dict]: ...
    def outbox_counts(self) -> dict[str, dict]: ...
    def outbox_sent(self, ids: list[int]) -> None: ...
    def outbox_failed(self, row_id: int, error: str, retry_in: float) -> None: ...
    def outbox_expire(self, older_than: float) -> list[dict]: ...
    def announced(self, target: str) -> set[str]: ...
    def announce(self, target: str, topics: set[str]) -> None: ...
    # ---- the web page (rkvideo serve): search, thumbnails, forgetting a description
    def browse(self, query: str, filters: Filters, limit: int = 20, offset: int = 0) -> list[dict]: ...
    def folders(self) -> list[str]: ...
    def thumbnails(self, description_ids: list[int]) -> dict[int, list[dict]]: ...
    def thumbnail(self, thumbnail_id: int) -> bytes | None: ...
    def forget(self, description_id: int) -> bool: ...

    # ---- workers: each daemon reports, and can be asked to drain (finish its job, take no new one)
    def report(self, worker: str, state: str) -> bool: ...
    def workers(self) -> list[dict]: ...
    def drain(self, target: str) -> list[str]: ...

    # ---- copying between stores (``rkvideo migrate-db``)
    def has_table(self, name: str) -> bool: ...
    def columns(self, table: str) -> list[tuple[str, str]]: ...
    def rows(self, table: str, after: int = 0, limit: int | None = None) -> list[dict]: ...
    def load(self, table: str, columns: list[tuple[str, str]], rows: list[dict]) -> int: ...

    # ---- life
    def lock_daemon(self) -> None: ...
    def files(self) -> list[str]: ...
    def close(self) -> None: ...
    def __enter__(self) -> JobStore: ...
    def __exit__(self, *exc) -> None: ...


def now() -> str:
    """UTC time as ISO 8601 with microseconds; the fixed width makes text comparison chronological."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def later(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def db_text(path: str) -> str:
    """A path as stored: file names that are not valid UTF-8 keep their bytes as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def valid_name(path: str) -> bool:
    """The path can be stored as it is (its name is valid UTF-8)."""
    return db_text(path) == path


def same_content(original: Job) -> str:
    """Why a copy is skipped (kept in its job's ``error``)."""
    return f"same content as {original.path} (job {original.id})"


def timings_text(timings: dict) -> str:
    """Seconds per stage for a log or terminal line: ``encode 1.20s, generate 3.45s``."""
    return ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
