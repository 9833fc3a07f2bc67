"""The job store in one SQLite file: the durable queue and the searchable descriptions.

Why SQLite (through sqlite-utils) in WAL mode: one file that survives power
cuts, that other tools (``sqlite3``, Datasette, pandas) can read as plain
tables, that the daemon and the ``list``/``search`` commands can use at the
same time (WAL lets readers run while the daemon writes), and that has
full-text search built in (FTS5). JSON columns hold lists and dicts as text,
never pickles. The schema is built by named steps (``migrations``).

Exactly-once rests on three rules:

* every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction (IMMEDIATE
  takes the write lock up front, so two writers wait for each other instead
  of failing on a lock upgrade);
* a description row and its job's ``done`` status are committed together;
* a job still ``running`` when the daemon starts was interrupted and goes
  back to ``queued`` (or to ``failed`` once it has used up its attempts, so a
  file that crashes the decoder cannot crash-loop the service). One daemon
  per database (``lock_daemon``) makes every running job at start-up an
  orphan, whichever worker id claimed it.

Duplicates are found by a content fingerprint (see ``fingerprint``). A copy is
``skipped`` with ``duplicate_of`` pointing at the original while the original
is (to be) described. If the original goes away undescribed — its file is
deleted, or its content changes — before it is ``done``, the oldest copy is
queued in its place (``drop``, ``put``), so that content is still described
once. A ``done`` original that is deleted keeps its descriptions and its
copies stay skipped: their content is described already.

The file itself (``dbfile``): the lock file is named after the database's
real path, so one daemon per database file holds however the path is spelled;
a write that finds another process's lock waits and tries again, calling
``on_busy`` between tries (the daemon waits as long as it takes, commands give
up after 30 s); and every commit first checks that the file at the path is
still the one opened, so a deleted or replaced database is never written into.
Sidecars that could not be written are kept in ``missing_sidecars`` with their
text, committed with the description.

Read-only opens (``readonly=True``, for ``list``/``show``/``search``) never
write, so they work for a user who may only read the file: while a daemon
runs, SQLite reads through the ``-wal`` and ``-shm`` files the daemon keeps
(the reader needs read access to both); with no daemon there is no ``-wal``
and, when the folder is not writable, the file is read as immutable. Limit: a
daemon that starts writing during such an immutable read may be missed, or
in rare cases seen half-way; run the command again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import quote

import sqlite_utils

from . import browse, dbfile, migrations, search
from .base import (Filters, Job, Messages, MissingSidecar, Outgoing, Status, StoreError, StoreUnavailable, db_text,
                   later, now, same_content)
from .rows import FORGOTTEN, INTERRUPTED, KEPT, Reads, decode, described_file, description_row, stopped_each_time
from .thumbnails import ThumbnailFiles, folder_for

log = logging.getLogger(__name__)

# A put with one of these statuses finishes the job at once.
FINAL_ON_PUT = (Status.FAILED, Status.SKIPPED)
# SQLite's primary result codes for a lock held elsewhere, an I/O error and a full disk.
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_IOERR, SQLITE_FULL = 5, 6, 10, 13
# Less free space than this where the database lives, after an I/O error: the disk is full.
LOW_SPACE = 1 << 20
FORGET_WORKERS = 7 * 86400   # a worker not heard of for a week leaves the workers table


def _free_bytes(folder: Path) -> int | None:
    """Bytes this user may still write in ``folder``'s file system (None when it cannot be asked)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class SqliteStore(Reads):
    """One connection to the database file; use one store per thread. ``roots`` (watched folders by name)
    is accepted for the same signature as ``PostgresStore``: one board, so paths are the keys here."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True, readonly: bool = False,
                 on_busy: dbfile.OnBusy | None = None, roots: dict | None = None):
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self.readonly = readonly
        # Called while a write waits for another process's lock (see dbfile); commands give up.
        self.on_busy = on_busy or dbfile.give_up_after(dbfile.BUSY_LIMIT, self.path)
        self._lock_file = None
        self._identity = None
        self.thumbnail_files = ThumbnailFiles(folder_for(self.path))
        if (readonly or not create) and not self.path.exists():
            raise StoreError(f"{self.path}: no database yet (run `rkvideo watch` or `rkvideo describe --db`, "
                             f"or pass --db PATH)")
        if create and not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path.parent}: cannot create the database folder: {exc.strerror}") from None
        try:
            self.db = sqlite_utils.Database(self._connect())
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None
        try:
            dbfile.patiently(lambda: self._setup(create and not readonly), self.path, self.on_busy)
            if not readonly:
                self._identity = dbfile.Identity(self.path)
        except BaseException as exc:
            self.db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._unusable(exc) from None
            raise

    def _unusable(self, exc: sqlite3.DatabaseError) -> StoreError:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF      # the primary result code
        if code in (SQLITE_BUSY, SQLITE_LOCKED) or "locked" in str(exc):
            return StoreUnavailable(f"{self.path}: the database is locked by another process ({exc}); try again "
                                    f"when it is done")
        free = _free_bytes(self.path.parent)
        if code in (SQLITE_FULL, SQLITE_IOERR, 0) and free is not None and free < LOW_SPACE:
            return StoreUnavailable(f"{self.path}: cannot open the database: the disk holding it is full ({free} "
                                    f"bytes free; {exc}); free some space and try again")
        fix = ("is it an rkvideo database, and may this user read it (and its -wal and -shm files while a "
               "daemon runs)?" if self.readonly else "is it an rkvideo database, and is its folder writable?")
        return StoreError(f"{self.path}: cannot open the database: {exc} ({fix})")

    # ------------------------------------------------------------ set-up

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; every write below is an explicit one.
        if not self.readonly:
            return sqlite3.connect(str(self.path), timeout=dbfile.BUSY_SLICE, isolation_level=None)
        uri = "file:" + quote(os.fsencode(os.path.abspath(self.path)))
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=dbfile.BUSY_SLICE, isolation_level=None)
        try:
            # Readers wait for no writer in WAL mode; only an exclusive lock (another tool's) blocks them,
            # and that is waited for like any lock (on_busy decides how long).
            dbfile.patiently(lambda: conn.execute("SELECT count(*) FROM sqlite_master").fetchone(), self.path,
                             self.on_busy)
            return conn
        except StoreError:
            conn.close()
            raise
        except sqlite3.OperationalError:
            # WAL needs the -shm file, which a reader cannot create in a folder it may not write. With no
            # -wal file no one has the database open, and the file alone is the whole database.
            conn.close()
            # An empty -wal holds nothing either (one is left where a writer could not extend it: a full disk).
            if os.path.exists(f"{self.path}-wal") and os.path.getsize(f"{self.path}-wal") > 0:
                raise
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, timeout=dbfile.BUSY_SLICE, isolation_level=None)

    def _setup(self, create: bool) -> None:
        if sqlite3.sqlite_version_info < (3, 31):      # generated columns (jobs.relpath)
            raise StoreError(f"{self.path}: rkvideo needs SQLite 3.31 or newer; this Python has "
                             f"{sqlite3.sqlite_version}")
        self.db.execute("PRAGMA foreign_keys = ON")
        version = migrations.version(self.db)
        if version is None and not create:
            raise StoreError(f"{self.path}: not an rkvideo database (no schema_version table)")
        self._check_version(version)
        if not self.readonly and migrations.pending(self.db):
            self._migrate()
        # FULL: a commit is on disk when COMMIT returns, so a power cut cannot undo a `done`.
        self.db.execute("PRAGMA synchronous = FULL")

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > migrations.SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema version {version} is newer than this rkvideo "
                             f"understands ({migrations.SCHEMA_VERSION}); upgrade rkvideo")

    def _migrate(self) -> None:
        """Create the schema, or bring an older one up to date, once, whoever else opens it now."""
        self._refuse_foreign()          # before the lock file is made beside someone else's database
        with dbfile.creation_lock(self.path):     # another process may be creating it right now
            version = migrations.version(self.db)
            if version is None:
                self._refuse_foreign()
                self.db.enable_wal()    # persistent: every later connection opens in WAL mode
            self._check_version(version)
            with self._transaction():
                migrations.migrate(self.db)

    def _refuse_foreign(self) -> None:
        """A database without our schema_version but with tables of its own is someone else's."""
        if migrations.version(self.db) is None:
            foreign = migrations.foreign_tables(self.db)
            if foreign:
                raise StoreError(f"{self.path}: not an rkvideo database (it has other tables: "
                                 f"{', '.join(sorted(foreign))}); pass another --db")

    def lock_daemon(self) -> None:
        """Only one daemon per database file, whatever path names it: a second one would requeue the
        first one's running job (see ``dbfile.lock_daemon``)."""
        self._lock_file = dbfile.lock_daemon(self.path)    # held until closed or the process ends

    def files(self) -> list[str]:
        """The database file and everything kept beside it (-wal, -shm, -journal, the lock file, the
        thumbnails folder), as real paths: the daemon never takes them, or anything below them, for
        recordings."""
        return [*dbfile.files(self.path), os.path.realpath(self.thumbnail_files.folder)]

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self, doing: str = ""):
        """One write transaction; a database failure becomes a StoreError naming the file. Waits for
        another process's write lock (``on_busy``); commits only into the file the store opened."""
        try:
            dbfile.patiently(lambda: self.db.execute("BEGIN IMMEDIATE"), self.path, self.on_busy)
            try:
                yield self
                if self._identity is not None:
                    self._identity.check()
            except BaseException:
                if self.db.conn.in_transaction:    # some errors (disk full, I/O) have rolled it back already
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.conn.in_transaction:
                self.db.execute("ROLLBACK")
            raise StoreError(f"{self.path}: {doing}{': ' if doing else ''}{exc}") from exc

    def _rows(self, sql: str, params=()) -> list[dict]:
        try:
            return dbfile.patiently(lambda: list(self.db.query(sql, params)), self.path, self.on_busy)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def _job(self, row: dict) -> Job:
        return Job.from_row(row)

    # ------------------------------------------------------------- reads (and those of rows.Reads)

    def job_at(self, path: str) -> Job | None:
        return self._one("SELECT * FROM jobs WHERE path = ?", [db_text(path)])

    def jobs_under(self, folder: str) -> list[Job]:
        prefix = db_text(folder.rstrip("/")) + "/"
        return self._jobs("SELECT * FROM jobs WHERE substr(path, 1, ?) = ?", [len(prefix), prefix])

    def events(self, description_id: int) -> list[dict]:
        """The description's timeline moments in time order: start, end (seconds), text, frames, score."""
        rows = self._rows("SELECT id, start_s AS start, end_s AS end, text, frames, score FROM events "
                          "WHERE description_id = ? ORDER BY start_s, id", [description_id])
        return [decode(row) for row in rows]

    def original(self, digest: str, path: str) -> Job | None:
        """The first job with this content under another path that is not itself a duplicate."""
        return self._one("SELECT * FROM jobs WHERE hash = ? AND path != ? AND status != ? ORDER BY id LIMIT 1",
                         [digest, db_text(path), Status.SKIPPED])

    def missing_sidecars(self, ids: list[int] | None = None) -> list[MissingSidecar]:
        """Sidecars still to be written, by job (only those of ``ids`` when given)."""
        sql, params = "SELECT * FROM missing_sidecars", []
        if ids:
            sql += f" WHERE job_id IN ({', '.join('?' for _ in ids)})"
            params = list(ids)
        return [MissingSidecar(**row) for row in self._rows(sql + " ORDER BY job_id, kind", params)]

    def browse(self, query: str, filters: Filters, limit: int = 20, offset: int = 0) -> list[dict]:
        """The web page's results: moments and recordings holding every word of ``query``, best first; with
        no query, the recordings newest first (see ``browse``). Only the words count: quotes, operators and
        other signs are not FTS5 syntax here, so no query can be a syntax error."""
        words = re.findall(r"\w+", query)
        try:
            if not query.strip():
                return browse.recordings(self.db, filters, limit, offset)
            if not words:
                return []
            return browse.search(self.db, " ".join(f'"{w}"' for w in words), filters, limit, offset)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: search {query!r}: {exc}") from exc

    def folders(self) -> list[str]:
        """Every folder that holds a recording (the web page's folder filter)."""
        try:
            return browse.folders(self.db)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def thumbnails(self, description_ids: list[int]) -> dict[int, list[dict]]:
        """description id → its thumbnails in frame order: id, seq, seconds, path."""
        try:
            return browse.thumbnails(self.db, description_ids)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def thumbnail(self, thumbnail_id: int) -> bytes | None:
        """The JPEG of a thumbnail the database knows, or None (no such row, or its file is gone)."""
        rows = self._rows("SELECT path FROM thumbnails WHERE id = ?", [thumbnail_id])
        if not rows:
            return None
        f = self.thumbnail_files.open(rows[0]["path"])
        if f is None:
            return None
        with f:
            return f.read()

    def forget(self, description_id: int) -> bool:
        """Remove a description with its moments and its thumbnails (rows and files). The job stays; if it
        has no description left, its note says so (``rkvideo retry`` describes it again). Returns whether
        the description existed."""
        if not 0 < description_id < 2**63:       # SQLite's integers: no such row
            return False
        stamp = now()
        with self._transaction(f"cannot remove description {description_id}"):
            row = self.db.execute("SELECT job_id FROM descriptions WHERE id = ?", [description_id]).fetchone()
            if row is None:
                return False
            names = [r[0] for r in self.db.execute("SELECT path FROM thumbnails WHERE description_id = ?",
                                                   [description_id])]
            for table, key in (("events", "description_id"), ("thumbnails", "description_id"), ("descriptions", "id")):
                self.db.execute(f"DELETE FROM {table} WHERE {key} = ?", [description_id])
            self.db.execute("UPDATE jobs SET error = ?, updated_at = ? WHERE id = ? AND status = ? AND NOT EXISTS "
                            "(SELECT 1 FROM descriptions WHERE job_id = jobs.id)",
                            [FORGOTTEN, stamp, row[0], Status.DONE])
        self.thumbnail_files.remove(names)
        return True

    def search(self, query: str, limit: int = 20, raw: bool = False) -> list[dict]:
        """Descriptions matching ``query``, best first (FTS5 bm25), each with a snippet.

        Words are quoted unless ``raw`` (then FTS5 syntax applies: AND, OR, NOT, "phrases", prefix*).
        A word in a script written without spaces (Chinese, Japanese, Thai…) is found inside longer
        runs of text (``search``); a query with no word matches nothing.
        """
        terms = [] if raw else search.words(query)
        if not raw and not terms:
            return []
        if search.by_substring(terms):
            return self._substring_search(terms, limit)
        sql, params = search.words_sql(query if raw else search.fts_match(terms), limit)
        return self._matches(sql, params, query, raw)

    def _matches(self, sql: str, params: list, query: str, raw: bool) -> list[dict]:
        try:
            return dbfile.patiently(lambda: list(self.db.query(sql, params)), self.path, self.on_busy)
        except sqlite3.OperationalError as exc:
            fix = "check the FTS5 query syntax, or drop --raw" if raw else "a bug: please report it"
            raise StoreError(f"search {query!r}: {exc} ({fix})") from None

    def _substring_search(self, terms: list, limit: int) -> list[dict]:
        sql, params = search.substring_sql(terms, limit, self.db[search.TRIGRAM_TABLE].exists())
        hits = self._rows(sql, params)
        for hit in hits:
            hit["snippet"] = search.snippet(hit.pop("text"), terms)
        return hits

    def search_events(self, query: str, limit: int = 20, raw: bool = False) -> list[dict]:
        """Moments of stored timelines matching ``query``, best first, each with its recording, times
        (``start``/``end`` in seconds) and a snippet; as ``search`` for the query syntax."""
        terms = [] if raw else search.words(query)
        if not raw and not terms:
            return []
        match = query if raw else search.fts_match(terms)
        sql = ("SELECT e.id, e.job_id, e.description_id, coalesce(j.path, d.path) AS path, d.model, "
               "e.start_s AS start, e.end_s AS end, e.score, d.created_at, "
               "snippet(events_fts, 0, '[', ']', '…', 16) AS snippet, events_fts.rank AS rank "
               "FROM events_fts JOIN events e ON e.id = events_fts.rowid "
               "JOIN descriptions d ON d.id = e.description_id LEFT JOIN jobs j ON j.id = e.job_id "
               "WHERE events_fts MATCH ? ORDER BY events_fts.rank LIMIT ?")
        return self._matches(sql, [match, limit], query, raw)

    # ------------------------------------------------------ queue writes

    def put(self, path: str, status: Status, *, root: str | None = None, size=None, mtime=None, digest=None,
            duration=None, error=None, duplicate_of=None, messages: Messages | None = None) -> int:
        """Insert or reset the job for ``path``; attempts start again at 0. ``root`` is the watched folder
        ``path`` is in (kept from before when None). ``messages(job_id)`` go to the outbox in the same
        transaction."""
        with self._transaction():
            job_id = self._put(path, status, root=root, size=size, mtime=mtime, digest=digest,
                               duration=duration, error=error, duplicate_of=duplicate_of)
            if messages is not None:
                self._enqueue(messages(job_id))
            return job_id

    def _put(self, path: str, status: Status, *, root=None, size=None, mtime=None, digest=None, duration=None,
             error=None, duplicate_of=None) -> int:
        """``put`` inside a transaction the caller holds (it opens none of its own)."""
        stamp = now()
        status = Status(status)
        values = {"size": size, "mtime": mtime, "hash": digest, "duration": duration, "status": status,
                  "error": error, "duplicate_of": duplicate_of, "stamp": stamp, "path": db_text(path),
                  "root": _root(path, root), "finished": stamp if status in FINAL_ON_PUT else None}
        old = self.db.execute("SELECT id, hash, status FROM jobs WHERE path = ?", [values["path"]]).fetchone()
        if old is not None and old[1] != digest and old[2] != Status.DONE:
            # The file's old content was never described: a copy of it now has to be.
            self._promote_duplicate(old[0], stamp)
        if old is not None and old[1] != digest:
            self._forget_kept(old[0])       # moments of the old content must not be resumed
        self.db.execute(
            "INSERT INTO jobs (path, root, size, mtime, hash, duration, status, attempts, error, duplicate_of, "
            "created_at, updated_at, finished_at) VALUES (:path, :root, :size, :mtime, :hash, :duration, :status, "
            "0, :error, :duplicate_of, :stamp, :stamp, :finished) "
            "ON CONFLICT(path) DO UPDATE SET root = coalesce(:root, root), size = :size, mtime = :mtime, "
            "hash = :hash, duration = :duration, status = :status, attempts = 0, error = :error, "
            "duplicate_of = :duplicate_of, not_before = NULL, updated_at = :stamp, started_at = NULL, "
            "finished_at = :finished", values)
        return self.db.execute("SELECT id FROM jobs WHERE path = ?", [values["path"]]).fetchone()[0]

    def _promote_duplicate(self, job_id: int, stamp: str) -> Job | None:
        """The original ``job_id`` goes away undescribed: its oldest skipped copy is queued in its place
        and the other copies now point at that one. Returns the promoted job or None."""
        row = self.db.execute("SELECT id FROM jobs WHERE duplicate_of = ? AND status = ? ORDER BY id LIMIT 1",
                              [job_id, Status.SKIPPED]).fetchone()
        if row is None:
            return None
        self.db.execute("UPDATE jobs SET status = ?, duplicate_of = NULL, error = NULL, attempts = 0, "
                        "not_before = NULL, started_at = NULL, finished_at = NULL, updated_at = ? WHERE id = ?",
                        [Status.QUEUED, stamp, row[0]])
        promoted = self.job(row[0])
        self.db.execute("UPDATE jobs SET duplicate_of = ?, error = ?, updated_at = ? WHERE duplicate_of = ?",
                        [promoted.id, same_content(promoted), stamp, job_id])
        return promoted

    def touch(self, job_id: int, size: int, mtime: float) -> None:
        """Same content, new size/mtime on record (e.g. the file was touched)."""
        with self._transaction():
            self.db.execute("UPDATE jobs SET size = ?, mtime = ?, updated_at = ? WHERE id = ?",
                            [size, mtime, now(), job_id])

    def move(self, job_id: int, path: str, *, root: str | None = None) -> None:
        """The job's file was renamed to ``path``, in the watched folder ``root`` (None: the one it was in,
        if it is still there)."""
        new = db_text(path)
        with self._transaction():
            self.db.execute(f"UPDATE jobs SET path = :path, root = {_new_root(':path')}, updated_at = :stamp "
                            "WHERE id = :id", {"path": new, "root": _root(path, root), "stamp": now(), "id": job_id})

    def move_folder(self, src: str, dest: str, *, root: str | None = None) -> int:
        """A renamed folder: every job under ``src`` now lives under ``dest`` (in the watched folder
        ``root``; None: the one each job was in, if it is still there)."""
        old, new = db_text(src.rstrip("/")) + "/", db_text(dest.rstrip("/")) + "/"
        moved = "(:new || substr(path, :n + 1))"
        with self._transaction():
            cursor = self.db.execute(
                f"UPDATE jobs SET path = {moved}, root = {_new_root(moved)}, updated_at = :stamp "
                "WHERE substr(path, 1, :n) = :old",
                {"new": new, "n": len(old), "old": old, "root": _root(dest + "/", root), "stamp": now()})
            return cursor.rowcount

    def drop(self, job_id: int, running: bool = False) -> tuple[str, Job | None]:
        """Forget a job whose file is gone; one transaction. Returns what happened and the promoted copy:

        * ``("dropped", copy)``: the job is deleted; if it was never described, its oldest skipped
          duplicate (``copy``, else None) is queued in its place, since that content still needs a
          description;
        * ``("kept", None)``: the job has descriptions, which outlive the recording: it stays, and one
          queued again by ``retry`` (or running, failed) goes back to ``done`` with a note; its
          duplicates stay skipped, because their content is described;
        * ``("", None)``: nothing to do (no such job, or a running job and not ``running=True``, which
          only its worker passes).
        """
        stamp = now()
        with self._transaction():
            row = self.db.execute("SELECT status, EXISTS (SELECT 1 FROM descriptions WHERE job_id = jobs.id) "
                                  "FROM jobs WHERE id = ?", [job_id]).fetchone()
            if row is None or (row[0] == Status.RUNNING and not running):
                return "", None
            if row[1]:
                if row[0] != Status.DONE:
                    self.db.execute(
                        "UPDATE jobs SET status = ?, duplicate_of = NULL, not_before = NULL, started_at = NULL, "
                        "error = ?, finished_at = ?, updated_at = ? WHERE id = ?",
                        [Status.DONE, KEPT, stamp, stamp, job_id])
                return "kept", None
            promoted = self._promote_duplicate(job_id, stamp)
            self._forget_kept(job_id)
            self.db.execute("DELETE FROM jobs WHERE id = ?", [job_id])
            return "dropped", promoted

    def claim(self, worker: str) -> Job | None:
        """Take the oldest due queued job for ``worker`` and mark it running (one more attempt)."""
        stamp = now()
        with self._transaction():
            job = self._one("SELECT * FROM jobs WHERE status = ? AND (not_before IS NULL OR not_before <= ?) "
                            "ORDER BY id LIMIT 1", [Status.QUEUED, stamp])
            if job is None:
                return None
            self.db.execute("UPDATE jobs SET status = ?, attempts = attempts + 1, started_at = ?, updated_at = ?, "
                            "not_before = NULL, worker = ? WHERE id = ?",
                            [Status.RUNNING, stamp, stamp, worker, job.id])
        job.status, job.attempts, job.worker = Status.RUNNING, job.attempts + 1, worker
        job.started_at = job.updated_at = stamp
        job.not_before = None
        return job

    def finish(self, job: Job, result, *, timings: dict | None = None, source: str = "watch",
               before_commit: Callable[[], None] | None = None, messages: Messages | None = None,
               missing_sidecars: list[MissingSidecar] = ()) -> int:
        """Store the description and mark the job done, in one transaction, with the outbox rows of
        ``messages(description_id)``. ``before_commit`` is called inside it, after every write: if it
        raises, nothing is kept. ``missing_sidecars``: the sidecars of this description that could not
        be written (they replace those of an earlier one). Returns the description's id."""
        stamp = now()
        with self._transaction():
            description = self._insert_description(job, result, timings, source, stamp)
            self._mark_done(job.id, stamp)
            self.db.execute("DELETE FROM missing_sidecars WHERE job_id = ?", [job.id])
            for missing in missing_sidecars:
                self.db.execute("INSERT INTO missing_sidecars (job_id, kind, path, recording, text, error, failed_at) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)", [job.id, missing.kind, missing.path,
                                                                 missing.recording, missing.text, missing.error, stamp])
            if messages is not None:
                self._enqueue(messages(description))
            if before_commit is not None:
                before_commit()
        return description

    def _mark_done(self, job_id: int, stamp: str) -> None:
        self.db.execute("UPDATE jobs SET status = ?, error = NULL, not_before = NULL, finished_at = ?, "
                        "updated_at = ? WHERE id = ?", [Status.DONE, stamp, stamp, job_id])

    def _insert_description(self, job: Job, result, timings, source: str, stamp: str) -> int:
        # The path at commit time, read in this transaction: a rename while describing moved the job.
        (path,) = self.db.execute("SELECT path FROM jobs WHERE id = ?", [job.id]).fetchone()
        row = description_row(job, result, timings, source, stamp, path)
        columns = ", ".join(row)
        cursor = self.db.execute(f"INSERT INTO descriptions ({columns}) VALUES "
                                 f"({', '.join(':' + c for c in row)})", row)
        description = cursor.lastrowid
        self._insert_events(job.id, description, result.events, stamp)
        self._insert_thumbnails(description, result, stamp)
        return description

    def _insert_thumbnails(self, description_id: int, result, stamp: str) -> None:
        """The result's thumbnails as files beside the database and rows naming them. A file that cannot
        be written (a full disk, a planted link) costs the thumbnails, never the description."""
        rows = []
        try:
            for seq, (frame, data) in enumerate(zip(result.frames, getattr(result, "thumbnails", None) or [])):
                rows.append((description_id, seq, frame.get("seconds"),
                             self.thumbnail_files.write(description_id, seq, data), stamp))
        except OSError as exc:
            log.warning("%s: thumbnails of description %d not kept: %s", self.thumbnail_files.folder,
                        description_id, exc)
            self.thumbnail_files.remove(row[3] for row in rows)
            return
        self.db.conn.executemany("INSERT INTO thumbnails (description_id, seq, seconds, path, created_at) "
                                 "VALUES (?, ?, ?, ?, ?)", rows)

    def _insert_events(self, job_id: int, description_id: int, events, stamp: str) -> None:
        # The moments kept for a resume are part of ``events`` now (the timeline reused them).
        self._forget_kept(job_id)
        self.db.conn.executemany(
            "INSERT INTO events (job_id, description_id, start_s, end_s, text, frames, score, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(job_id, description_id, e.start, e.end, e.text, json.dumps(e.frames, ensure_ascii=False), e.score,
              stamp) for e in events])

    def keep_event(self, job_id: int, event) -> int:
        """A finished moment of a timeline still being described, kept (``description_id`` NULL) so a
        restart after a crash goes on from there; ``finish`` attaches the moments to the description."""
        with self._transaction():
            cursor = self.db.execute(
                "INSERT INTO events (job_id, description_id, start_s, end_s, text, frames, score, created_at) "
                "VALUES (?, NULL, ?, ?, ?, ?, ?, ?)",
                [job_id, event.start, event.end, event.text, json.dumps(event.frames, ensure_ascii=False),
                 event.score, now()])
            return cursor.lastrowid

    def kept_events(self, job_id: int) -> list[dict]:
        """The moments kept by ``keep_event`` for this job, in time order (start, end, text, frames, score)."""
        rows = self._rows("SELECT id, start_s AS start, end_s AS end, text, frames, score FROM events "
                          "WHERE job_id = ? AND description_id IS NULL ORDER BY start_s, id", [job_id])
        return [decode(row) for row in rows]

    def _forget_kept(self, job_id: int) -> None:
        self.db.execute("DELETE FROM events WHERE job_id = ? AND description_id IS NULL", [job_id])

    def fail(self, job_id: int, error: str, retry_in: float | None = None, *,
             messages: Messages | None = None) -> None:
        """Record a failure: queued again after ``retry_in`` seconds, or failed for good (None); the outbox
        rows of ``messages(job_id)`` in the same transaction."""
        stamp = now()
        with self._transaction():
            if messages is not None:
                self._enqueue(messages(job_id))
            if retry_in is None:
                self.db.execute("UPDATE jobs SET status = ?, error = ?, not_before = NULL, finished_at = ?, "
                                "updated_at = ? WHERE id = ?", [Status.FAILED, error, stamp, stamp, job_id])
            else:
                self.db.execute("UPDATE jobs SET status = ?, error = ?, not_before = ?, updated_at = ? "
                                "WHERE id = ?", [Status.QUEUED, error, later(retry_in), stamp, job_id])

    def requeue(self, job_id: int, delay: float | None = None) -> None:
        """Put a running job back (stopped by SIGTERM, file changed): the attempt does not count."""
        with self._transaction():
            self.db.execute("UPDATE jobs SET status = ?, attempts = max(attempts - 1, 0), not_before = ?, "
                            "started_at = NULL, updated_at = ? WHERE id = ? AND status = ?",
                            [Status.QUEUED, later(delay) if delay else None, now(), job_id, Status.RUNNING])

    def recover(self, worker: str, max_attempts: int, *,
                messages: Callable[[Job], Iterable[Outgoing]] | None = None) -> tuple[list[Job], list[Job]]:
        """Jobs left running by a worker that is gone go back to the queue, or fail after max_attempts.

        Gone means: not ``worker``, the caller. ``lock_daemon`` allows one daemon per database and every
        daemon process has its own worker id, so a running job claimed under any other id was left by a
        daemon that has stopped; the caller's own running job is alive. Called at start-up and then
        periodically. Returns (requeued, failed), each job as it was found; ``messages(job)`` of each
        failed one go to the outbox in the same transaction.
        """
        stamp = now()
        with self._transaction():
            jobs = self._jobs("SELECT * FROM jobs WHERE status = ? AND worker IS NOT ? ORDER BY id",
                              [Status.RUNNING, worker])
            requeued, failed = [], []
            for job in jobs:
                if job.attempts >= max_attempts:
                    error = stopped_each_time(job.attempts)
                    self.db.execute("UPDATE jobs SET status = ?, error = ?, finished_at = ?, updated_at = ? "
                                    "WHERE id = ?", [Status.FAILED, error, stamp, stamp, job.id])
                    failed.append(job)
                    if messages is not None:
                        self._enqueue(messages(dataclasses.replace(job, status=Status.FAILED, error=error)))
                else:
                    self.db.execute("UPDATE jobs SET status = ?, started_at = NULL, updated_at = ?, "
                                    "error = coalesce(error, ?) WHERE id = ?",
                                    [Status.QUEUED, stamp, INTERRUPTED, job.id])
                    requeued.append(job)
            if self.db["workers"].exists():
                self.db.execute("DELETE FROM workers WHERE seen_at < ?", [later(-FORGET_WORKERS)])
        return requeued, failed

    def retry(self, ids: list[int] | None = None, statuses: tuple = (Status.FAILED,)) -> int:
        """Queue jobs again with fresh attempts: the given ids (unless running), or every job with one of
        ``statuses``. Returns how many."""
        stamp = now()
        reset = ("status = ?, attempts = 0, error = NULL, not_before = NULL, duplicate_of = NULL, "
                 "started_at = NULL, finished_at = NULL, updated_at = ?")
        with self._transaction():
            if ids:
                marks = ", ".join("?" for _ in ids)
                cursor = self.db.execute(f"UPDATE jobs SET {reset} WHERE status != ? AND id IN ({marks})",
                                         [Status.QUEUED, stamp, Status.RUNNING, *ids])
            else:
                marks = ", ".join("?" for _ in statuses)
                cursor = self.db.execute(f"UPDATE jobs SET {reset} WHERE status IN ({marks})",
                                         [Status.QUEUED, stamp, *(Status(s) for s in statuses)])
            return cursor.rowcount

    def sidecar_written(self, job_id: int, kind: str) -> None:
        """A missing sidecar is written now (or will never be: its recording moved on)."""
        with self._transaction():
            self.db.execute("DELETE FROM missing_sidecars WHERE job_id = ? AND kind = ?", [job_id, kind])

    def sidecar_failed(self, job_id: int, kind: str, error: str) -> None:
        """Another try to write a missing sidecar failed: the latest reason."""
        with self._transaction():
            self.db.execute("UPDATE missing_sidecars SET error = ?, failed_at = ? WHERE job_id = ? AND kind = ?",
                            [error, now(), job_id, kind])

    # ------------------------------------------------------------ the outbox

    def _enqueue(self, messages: Iterable[Outgoing]) -> None:
        """Outbox rows, inside the caller's transaction."""
        stamp = now()
        self.db.conn.executemany(
            "INSERT INTO outbox (message, target, topic, payload, retain, job_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(m.message, m.target, m.topic, m.payload, int(m.retain), m.job_id, stamp) for m in messages])

    def outbox(self, target: str | None = None, limit: int | None = None) -> list[dict]:
        """Messages waiting for delivery, oldest first (those of ``target`` only, the first ``limit``)."""
        sql = "SELECT * FROM outbox" + (" WHERE target = ?" if target is not None else "") + " ORDER BY id"
        params: list = [target] if target is not None else []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._rows(sql, params)
        for row in rows:
            row["retain"] = bool(row["retain"])
        return rows

    def outbox_counts(self) -> dict[str, dict]:
        """Per target: how many rows wait (``n``), since when (``oldest``) and the head row's last error."""
        rows = self._rows("SELECT target, count(*) AS n, min(created_at) AS oldest, "
                          "(SELECT last_error FROM outbox o WHERE o.target = outbox.target ORDER BY id LIMIT 1) "
                          "AS last_error FROM outbox GROUP BY target ORDER BY target")
        return {row.pop("target"): row for row in rows}

    def outbox_sent(self, ids: list[int]) -> None:
        """Delivered: the rows leave the outbox."""
        if not ids:
            return
        with self._transaction("cannot update the outbox"):
            self.db.execute(f"DELETE FROM outbox WHERE id IN ({', '.join('?' for _ in ids)})", list(ids))

    def outbox_failed(self, row_id: int, error: str, retry_in: float) -> None:
        """A delivery of row ``row_id`` failed: count it, keep why, and when it is tried next."""
        with self._transaction("cannot update the outbox"):
            self.db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_try = ? WHERE id = ?",
                            [error, later(retry_in), row_id])

    def outbox_expire(self, older_than: float) -> list[dict]:
        """Drop messages written more than ``older_than`` seconds ago; returns per target how many went
        (``target``, ``n``, ``oldest``, ``messages``: their ids), for the log."""
        cutoff = later(-older_than)
        with self._transaction("cannot expire outbox messages"):
            gone = list(self.db.query(
                "SELECT target, count(*) AS n, min(created_at) AS oldest, group_concat(message, ' ') AS messages "
                "FROM outbox WHERE created_at < ? GROUP BY target ORDER BY target", [cutoff]))
            if gone:
                self.db.execute("DELETE FROM outbox WHERE created_at < ?", [cutoff])
        return gone

    def announced(self, target: str) -> set[str]:
        """The retained discovery topics ``target`` was last given."""
        return {row["topic"] for row in self._rows("SELECT topic FROM announced WHERE target = ?", [target])}

    def announce(self, target: str, topics: set[str]) -> None:
        """``target`` now holds exactly these retained discovery topics."""
        stamp = now()
        with self._transaction("cannot record the announced topics"):
            self.db.execute("DELETE FROM announced WHERE target = ?", [target])
            self.db.conn.executemany("INSERT INTO announced (target, topic, created_at) VALUES (?, ?, ?)",
                                     [(target, topic, stamp) for topic in sorted(topics)])

    def save_result(self, result) -> int:
        """``rkvideo describe --db``: store one result under the job of its (first) input file.

        One transaction for the job and its description: a job must never be ``done`` without one (the
        daemon would never describe that file). Returns the description's id.
        """
        path, st, digest = described_file(result)
        with self._transaction(f"cannot store the result for {path}"):
            job = self.job_at(path)
            if job is None or job.hash != digest:
                self._put(path, Status.DONE, size=st.st_size, mtime=st.st_mtime, digest=digest)
                job = self.job_at(path)
            stamp = now()
            description = self._insert_description(job, result, None, "describe", stamp)
            if job.status != Status.RUNNING:      # a running daemon job commits its own row
                self._mark_done(job.id, stamp)
        return description


    # ------------------------------------------------------------ workers

    def report(self, worker: str, state: str) -> bool:
        """``worker`` is alive and ``state`` (running, draining, stopped); returns whether it was asked
        to drain."""
        stamp = now()
        with self._transaction("cannot report the worker"):
            self.db.execute("INSERT INTO workers (id, started_at, seen_at, state) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, state = excluded.state",
                            [worker, stamp, stamp, state])
            return bool(self.db.execute("SELECT drain FROM workers WHERE id = ?", [worker]).fetchone()[0])

    def workers(self) -> list[dict]:
        """Every worker heard of, with the job it runs now (if any)."""
        if not self.db["workers"].exists():      # read-only open of a database not migrated yet
            return []
        rows = self._rows("SELECT w.id, w.started_at, w.seen_at, w.state, w.drain, j.id AS job_id, j.path, "
                          "j.started_at AS job_started FROM workers w LEFT JOIN jobs j ON j.worker = w.id "
                          "AND j.status = 'running' ORDER BY w.started_at, w.id")
        return [{**row, "drain": bool(row["drain"])} for row in rows]

    def drain(self, target: str) -> list[str]:
        """Ask the worker ``target`` (an id, or a host name: every worker of that host) to finish its job
        and take no new one. Returns the ids asked."""
        with self._transaction("cannot ask for a drain"):
            where = "(id = ? OR substr(id, 1, ?) = ?) AND state != 'stopped'"
            params = [target, len(target) + 1, target + ":"]
            ids = [r[0] for r in self.db.execute(f"SELECT id FROM workers WHERE {where}", params)]
            self.db.execute(f"UPDATE workers SET drain = 1 WHERE {where}", params)
        return sorted(ids)

    # ------------------------------------------------------------ copying (migrate-db)

    def has_table(self, name: str) -> bool:
        return self.db[name].exists()

    def columns(self, table: str) -> list[tuple[str, str]]:
        """(name, kind) of the columns a copy writes (generated ones, like ``jobs.relpath``, left out; a
        thumbnail's file as ``data``, its bytes)."""
        kinds = {"INTEGER": "integer", "INT": "integer", "REAL": "real", "FLOAT": "real", "BLOB": "blob"}
        rows = self.db.execute(f"PRAGMA table_info([{table}])").fetchall()
        columns = [(r[1], kinds.get(r[2].upper(), "text")) for r in rows]
        if table == "thumbnails":
            columns = [("data", "blob") if name == "path" else (name, kind) for name, kind in columns]
        return columns

    def rows(self, table: str, after: int = 0, limit: int | None = None) -> list[dict]:
        """Rows of ``table`` with an id above ``after``, by id (all, for a table without ids); a job's
        ``root`` is its watched folder here already; a thumbnail comes with its JPEG (``data``)."""
        names = [c for c, _ in self.columns(table) if not (table == "thumbnails" and c == "data")]
        names += ["path"] if table == "thumbnails" else []
        query = f"SELECT {', '.join(f'[{n}]' for n in names)} FROM [{table}]"
        if "id" not in names:
            return self._rows(query)
        rows = self._rows(query + " WHERE id > ? ORDER BY id LIMIT ?", [after, -1 if limit is None else limit])
        if table == "thumbnails":
            for row in rows:
                f = self.thumbnail_files.open(row.pop("path"))
                row["data"] = None
                if f is not None:
                    with f:
                        row["data"] = f.read()
        return rows

    def load(self, table: str, columns: list[tuple[str, str]], rows: list[dict]) -> int:
        """Insert copied rows, ids kept; a table this database lacks is made first. A thumbnail's JPEG
        becomes its file (one whose bytes are lost is left out)."""
        types = {"integer": int, "real": float, "text": str, "blob": bytes}
        names = [c for c, _ in columns]
        if table == "thumbnails":
            names = [n for n in names if n != "data"] + ["path"]
            rows = [{**row, "path": self.thumbnail_files.write(row["description_id"], row["seq"], row["data"])}
                    for row in rows if row.get("data")]
        with self._transaction(f"cannot copy {table}"):
            if not self.has_table(table):
                self.db[table].create({name: types[kind] for name, kind in columns},
                                      pk="id" if any(n == "id" for n, _ in columns) else None)
            insert = (f"INSERT INTO [{table}] ({', '.join(f'[{n}]' for n in names)}) "
                      f"VALUES ({', '.join('?' for _ in names)})")
            self.db.conn.executemany(insert, [[row.get(n) for n in names] for row in rows])
        return len(rows)


def _new_root(path_sql: str) -> str:
    """SQL for the root of a moved job: the one given (``:root``), else the one it had if its new path
    (the SQL expression ``path_sql``) is still inside it."""
    return f"coalesce(:root, CASE WHEN substr({path_sql}, 1, length(root) + 1) = root || '/' THEN root END)"


def _root(path: str, root: str | None) -> str | None:
    """``root`` as stored, if ``path`` is inside it; else None."""
    if root is None:
        return None
    folder = db_text(str(root)).rstrip("/")
    return folder if db_text(path).startswith(folder + "/") else None
