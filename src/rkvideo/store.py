"""The database: a durable job queue and the searchable descriptions.

Why SQLite (through sqlite-utils) in WAL mode: one file that survives power
cuts, that other tools (``sqlite3``, Datasette, pandas) can read as plain
tables, that the daemon and the ``list``/``search`` commands can use at the
same time (WAL lets readers run while the daemon writes), and that has
full-text search built in (FTS5). JSON columns hold lists and dicts as text,
never pickles.

Exactly-once rests on three rules:

* every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` transaction (IMMEDIATE
  takes the write lock up front, so two writers wait for each other instead
  of failing on a lock upgrade);
* a description row and its job's ``done`` status are committed together;
* a job still ``running`` when the daemon starts was interrupted and goes
  back to ``queued`` (or to ``failed`` once it has used up its attempts, so a
  file that crashes the decoder cannot crash-loop the service).

Duplicates are found by a content fingerprint (see ``fingerprint``). A copy is
``skipped`` with ``duplicate_of`` pointing at the original while the original
is (to be) described. If the original goes away undescribed — its file is
deleted, or its content changes — before it is ``done``, the oldest copy is
queued in its place (``drop``, ``put``), so that content is still described
once. A ``done`` original that is deleted keeps its descriptions and its
copies stay skipped: their content is described already.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path


SCHEMA_VERSION = 1
STATUSES = ("queued", "running", "done", "failed", "skipped")

# Fingerprint sampling: small files are hashed whole, larger ones in blocks.
BLOCK = 1 << 20          # first and last MiB: container headers and indexes live there
PROBES = 16              # evenly spread 64 KiB samples in between
PROBE = 64 << 10


class StoreError(RuntimeError):
    """The database cannot be opened or used; the message names the file and the fix."""


def now() -> str:
    """UTC time as ISO 8601 with microseconds; the fixed width makes text comparison chronological."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def later(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def fingerprint(path: str | os.PathLike) -> str:
    """A cheap content hash: sha256 over the size, the first and last MiB and 16 × 64 KiB between.

    Files up to 4 MiB are hashed whole. For larger files this reads at most
    3 MiB however long the recording is (a full hash of a 2 GB file on an SD
    card takes a minute). It is safe for camera recordings because their
    container index (MP4 ``moov``, MKV cues, AVI ``idx1``) sits in the first
    or last MiB and lists every frame's size and offset, so two recordings of
    the same length that differ in any frame almost always differ there too,
    and the spread samples catch formats without an index (MPEG-TS).
    Limit: an in-place edit that keeps the file size and touches only bytes
    outside the sampled ranges is not seen (cameras do not produce those).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.sha256(f"rkvideo-fingerprint-1:{size}:".encode())
        if size <= 4 * BLOCK:
            digest.update(f.read())
            return digest.hexdigest()
        digest.update(f.read(BLOCK))
        span = size - 2 * BLOCK - PROBE
        for k in range(PROBES):
            f.seek(BLOCK + span * k // (PROBES - 1))
            digest.update(f.read(PROBE))
        f.seek(size - BLOCK)
        digest.update(f.read(BLOCK))
    return digest.hexdigest()


def timings_text(timings: dict) -> str:
    """Seconds per stage for a log or terminal line: ``encode 1.20s, generate 3.45s``."""
    return ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())


def same_content(original: dict) -> str:
    """Why a copy is skipped (kept in its job's ``error``)."""
    return f"same content as {original['path']} (job {original['id']})"


def db_text(path: str) -> str:
    """A path as stored: file names that are not valid UTF-8 keep their bytes as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def valid_name(path: str) -> bool:
    return db_text(path) == path


# The schema, as sqlite-utils column specs. Times are ISO 8601 UTC text,
# JSON columns are UTF-8 JSON text. Documented in the README.
JOBS = {
    "id": int, "path": str, "size": int, "mtime": float, "hash": str, "duration": float,
    "status": str, "attempts": int, "error": str, "duplicate_of": int, "not_before": str,
    "created_at": str, "updated_at": str, "started_at": str, "finished_at": str,
}
DESCRIPTIONS = {
    "id": int, "job_id": int, "path": str, "hash": str, "kind": str, "inputs": str, "text": str,
    "model": str, "vision_model": str, "llm_model": str, "prompt": str, "frames": str,
    "frame_count": int, "prompt_tokens": int, "vision_tokens": int, "new_tokens": int,
    "timings": str, "notes": str, "source": str, "created_at": str,
}
JSON_COLUMNS = ("inputs", "frames", "timings", "notes")


class Store:
    """One connection to the database; use one Store per thread."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path).expanduser()
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no database yet (run `rkvideo watch` or `rkvideo describe --db`, "
                             f"or pass --db PATH)")
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path.parent}: cannot create the database folder: {exc.strerror}") from None
        import sqlite_utils     # here, not at the top: `rkvideo --help` must not pay for it
        try:
            # isolation_level=None: no implicit transactions; every write below is an explicit one.
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self.db = sqlite_utils.Database(conn)
            self._setup(create)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc} "
                             f"(is it an rkvideo database, and is its folder writable?)") from None
        self._lock_file = None

    # ------------------------------------------------------------ set-up

    def _setup(self, create: bool) -> None:
        self.db.execute("PRAGMA foreign_keys = ON")
        if self._version() is None:
            if not create:
                raise StoreError(f"{self.path}: not an rkvideo database (no schema_version table)")
            with self._creation_lock():     # another process may be creating it right now
                if self._version() is None:
                    self._create()
        version = self._version()
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: database schema version {version} is newer than this rkvideo "
                             f"understands ({SCHEMA_VERSION}); upgrade rkvideo")
        # FULL: a commit is on disk when COMMIT returns, so a power cut cannot undo a `done`.
        self.db.execute("PRAGMA synchronous = FULL")

    def _version(self):
        if not self.db["schema_version"].exists():
            return None
        row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        return row[0] if row and row[0] is not None else None

    def _create(self) -> None:
        self.db.enable_wal()    # persistent: every later connection opens in WAL mode
        self.db["jobs"].create(JOBS, pk="id", not_null={"path", "status", "attempts"},
                               defaults={"attempts": 0}, if_not_exists=True)
        self.db["jobs"].create_index(["path"], unique=True, if_not_exists=True)
        self.db["jobs"].create_index(["status", "id"], if_not_exists=True)
        self.db["jobs"].create_index(["hash"], if_not_exists=True)
        self.db["descriptions"].create(DESCRIPTIONS, pk="id", foreign_keys=[("job_id", "jobs", "id")],
                                       not_null={"job_id"}, if_not_exists=True)
        self.db["descriptions"].create_index(["job_id"], if_not_exists=True)
        if not self.db["descriptions"].detect_fts():
            self.db["descriptions"].enable_fts(["text"], fts_version="FTS5", create_triggers=True)
        self.db["schema_version"].create({"version": int}, if_not_exists=True)
        self.db.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])

    @contextlib.contextmanager
    def _creation_lock(self):
        """A POSIX lock on byte 1 of ``<db>.lock`` while the schema is created; the close releases it.

        Not ``flock``: the daemon holds an exclusive ``flock`` on the same file for its whole life, and
        the two kinds of lock do not conflict (Linux, local file systems), so a process that found no
        schema never waits for a daemon that has started meanwhile and created it.
        """
        fd = self._open_lock_file()
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1)
            yield fd
        finally:
            os.close(fd)

    def _open_lock_file(self) -> int:
        """``<db>.lock``, never through a symbolic link planted at that name (it would be created or
        truncated wherever the link points)."""
        name = f"{self.path}.lock"
        try:
            return os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if os.path.islink(name):
                raise StoreError(f"{name} is a symbolic link: remove it (rkvideo never writes through one)") from None
            raise StoreError(f"{name}: cannot open the lock file ({e.strerror})") from None

    def lock_daemon(self) -> None:
        """Only one daemon per database: a second one would requeue the first one's running job.

        ``flock`` on ``<db>.lock``, not ``lockf``: a POSIX lock belongs to the process, and the kernel
        drops it as soon as *any* descriptor of that file is closed in the process (``_creation_lock``
        does that); a ``flock`` belongs to this open file and lasts until it is closed or the process
        ends, even by kill -9.
        """
        fd = self._open_lock_file()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{self.path}: another `rkvideo watch` is using this database "
                             f"(stop it first, or use another --db)") from None
        self._lock_file = fd    # held until the process ends (the kernel drops it even on kill -9)

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    @contextlib.contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------- reads

    def job(self, job_id: int) -> dict | None:
        rows = list(self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
        return rows[0] if rows else None

    def job_at(self, path: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM jobs WHERE path = ?", [db_text(path)]))
        return rows[0] if rows else None

    def jobs(self, status: str | None = None) -> list:
        sql = ("SELECT jobs.*, (SELECT count(*) FROM descriptions WHERE job_id = jobs.id) AS descriptions "
               "FROM jobs")
        if status:
            return list(self.db.query(sql + " WHERE status = ? ORDER BY id", [status]))
        return list(self.db.query(sql + " ORDER BY id"))

    def jobs_under(self, folder: str) -> list:
        prefix = db_text(folder.rstrip("/")) + "/"
        return list(self.db.query("SELECT * FROM jobs WHERE substr(path, 1, ?) = ?", [len(prefix), prefix]))

    def counts(self) -> dict:
        return {row["status"]: row["n"] for row in
                self.db.query("SELECT status, count(*) AS n FROM jobs GROUP BY status")}

    def descriptions(self, job_id: int) -> list:
        rows = self.db.query("SELECT * FROM descriptions WHERE job_id = ? ORDER BY id", [job_id])
        return [_decode(row) for row in rows]

    def original(self, digest: str, path: str) -> dict | None:
        """The first job with this content under another path that is not itself a duplicate."""
        rows = list(self.db.query(
            "SELECT * FROM jobs WHERE hash = ? AND path != ? AND status != 'skipped' ORDER BY id LIMIT 1",
            [digest, db_text(path)]))
        return rows[0] if rows else None

    def search(self, query: str, limit: int = 20, raw: bool = False) -> list:
        """Descriptions matching ``query``, best first (FTS5 bm25), each with a snippet.

        Words are quoted unless ``raw`` (then FTS5 syntax applies: AND, OR, NOT, "phrases", prefix*).
        """
        match = query if raw else self.db.quote_fts(query)
        sql = ("SELECT d.id, d.job_id, coalesce(j.path, d.path) AS path, d.model, d.prompt, d.created_at, "
               "snippet(descriptions_fts, 0, '[', ']', '…', 16) AS snippet, descriptions_fts.rank AS rank "
               "FROM descriptions_fts JOIN descriptions d ON d.id = descriptions_fts.rowid "
               "LEFT JOIN jobs j ON j.id = d.job_id "
               "WHERE descriptions_fts MATCH ? ORDER BY descriptions_fts.rank LIMIT ?")
        try:
            return list(self.db.query(sql, [match, limit]))
        except sqlite3.OperationalError as exc:
            raise StoreError(f"search {query!r}: {exc} (check the FTS5 query syntax, or drop --raw)") from None

    # ------------------------------------------------------ queue writes

    def put(self, path: str, status: str, *, size=None, mtime=None, digest=None, duration=None,
            error=None, duplicate_of=None) -> int:
        """Insert or reset the job for ``path``; attempts start again at 0."""
        with self.transaction():
            return self._put(path, status, size=size, mtime=mtime, digest=digest, duration=duration,
                             error=error, duplicate_of=duplicate_of)

    def _put(self, path: str, status: str, *, size=None, mtime=None, digest=None, duration=None,
             error=None, duplicate_of=None) -> int:
        """``put`` inside a transaction the caller holds (it opens none of its own)."""
        stamp = now()
        values = {"size": size, "mtime": mtime, "hash": digest, "duration": duration, "status": status,
                  "error": error, "duplicate_of": duplicate_of, "stamp": stamp, "path": db_text(path),
                  "finished": stamp if status in ("failed", "skipped") else None}
        old = self.db.execute("SELECT id, hash, status FROM jobs WHERE path = ?", [values["path"]]).fetchone()
        if old is not None and old[1] != digest and old[2] != "done":
            # The file's old content was never described: a copy of it now has to be.
            self._promote_duplicate(old[0], stamp)
        self.db.execute(
            "INSERT INTO jobs (path, size, mtime, hash, duration, status, attempts, error, duplicate_of, "
            "created_at, updated_at, finished_at) VALUES (:path, :size, :mtime, :hash, :duration, :status, "
            "0, :error, :duplicate_of, :stamp, :stamp, :finished) "
            "ON CONFLICT(path) DO UPDATE SET size = :size, mtime = :mtime, hash = :hash, duration = :duration, "
            "status = :status, attempts = 0, error = :error, duplicate_of = :duplicate_of, not_before = NULL, "
            "updated_at = :stamp, started_at = NULL, finished_at = :finished", values)
        return self.db.execute("SELECT id FROM jobs WHERE path = ?", [values["path"]]).fetchone()[0]

    def _promote_duplicate(self, job_id: int, stamp: str) -> dict | None:
        """The original ``job_id`` goes away undescribed: its oldest skipped copy is queued in its place
        and the other copies now point at that one. Returns the promoted job (id, path) or None."""
        row = self.db.execute("SELECT id, path FROM jobs WHERE duplicate_of = ? AND status = 'skipped' "
                              "ORDER BY id LIMIT 1", [job_id]).fetchone()
        if row is None:
            return None
        promoted = {"id": row[0], "path": row[1]}
        self.db.execute("UPDATE jobs SET status = 'queued', duplicate_of = NULL, error = NULL, attempts = 0, "
                        "not_before = NULL, started_at = NULL, finished_at = NULL, updated_at = ? WHERE id = ?",
                        [stamp, promoted["id"]])
        self.db.execute("UPDATE jobs SET duplicate_of = ?, error = ?, updated_at = ? WHERE duplicate_of = ?",
                        [promoted["id"], same_content(promoted), stamp, job_id])
        return promoted

    def touch(self, job_id: int, size: int, mtime: float) -> None:
        """Same content, new size/mtime on record (e.g. the file was touched)."""
        with self.transaction():
            self.db.execute("UPDATE jobs SET size = ?, mtime = ?, updated_at = ? WHERE id = ?",
                            [size, mtime, now(), job_id])

    def move(self, job_id: int, path: str) -> None:
        with self.transaction():
            self.db.execute("UPDATE jobs SET path = ?, updated_at = ? WHERE id = ?", [db_text(path), now(), job_id])

    def move_folder(self, src: str, dest: str) -> int:
        """A renamed folder: every job under ``src`` now lives under ``dest``."""
        old, new = db_text(src.rstrip("/")) + "/", db_text(dest.rstrip("/")) + "/"
        with self.transaction():
            cursor = self.db.execute("UPDATE jobs SET path = ? || substr(path, ?), updated_at = ? "
                                     "WHERE substr(path, 1, ?) = ?", [new, len(old) + 1, now(), len(old), old])
            return cursor.rowcount

    def drop(self, job_id: int, running: bool = False) -> tuple[str, dict | None]:
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
        with self.transaction():
            row = self.db.execute("SELECT status, EXISTS (SELECT 1 FROM descriptions WHERE job_id = jobs.id) "
                                  "FROM jobs WHERE id = ?", [job_id]).fetchone()
            if row is None or (row[0] == "running" and not running):
                return "", None
            if row[1]:
                if row[0] != "done":
                    self.db.execute(
                        "UPDATE jobs SET status = 'done', duplicate_of = NULL, not_before = NULL, started_at = NULL, "
                        "error = 'file deleted before it was described again; the earlier description is kept', "
                        "finished_at = ?, updated_at = ? WHERE id = ?", [stamp, stamp, job_id])
                return "kept", None
            promoted = self._promote_duplicate(job_id, stamp)
            self.db.execute("DELETE FROM jobs WHERE id = ?", [job_id])
            return "dropped", promoted

    def claim_next(self) -> dict | None:
        """Take the oldest due queued job and mark it running (one more attempt)."""
        stamp = now()
        with self.transaction():
            rows = list(self.db.query(
                "SELECT * FROM jobs WHERE status = 'queued' AND (not_before IS NULL OR not_before <= ?) "
                "ORDER BY id LIMIT 1", [stamp]))
            if not rows:
                return None
            self.db.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
                            "updated_at = ?, not_before = NULL WHERE id = ?", [stamp, stamp, rows[0]["id"]])
        job = rows[0]
        job.update(status="running", attempts=job["attempts"] + 1, started_at=stamp)
        return job

    def finish(self, job: dict, result, *, timings: dict | None = None, source: str = "watch") -> int:
        """Store the description and mark the job done, in one transaction."""
        stamp = now()
        with self.transaction():
            description = self._insert_description(job, result, timings, source, stamp)
            self.db.execute("UPDATE jobs SET status = 'done', error = NULL, not_before = NULL, finished_at = ?, "
                            "updated_at = ? WHERE id = ?", [stamp, stamp, job["id"]])
        return description

    def _insert_description(self, job: dict, result, timings, source: str, stamp: str) -> int:
        tokens = result.tokens or {}
        # The path at commit time, read in this transaction: a rename while describing moved the job.
        (path,) = self.db.execute("SELECT path FROM jobs WHERE id = ?", [job["id"]]).fetchone()
        row = {
            "job_id": job["id"], "path": path, "hash": job.get("hash"), "kind": result.kind,
            "inputs": json.dumps([db_text(os.path.abspath(p)) for p in result.inputs], ensure_ascii=False),
            "text": result.text, "model": result.model.get("profile"),
            "vision_model": result.model.get("vision"), "llm_model": result.model.get("llm"),
            "prompt": result.prompt,
            "frames": json.dumps(result.frames, ensure_ascii=False), "frame_count": len(result.frames),
            "prompt_tokens": tokens.get("prompt"), "vision_tokens": tokens.get("vision"),
            "new_tokens": tokens.get("new"),
            "timings": json.dumps({**result.timings, **(timings or {})}),
            "notes": json.dumps(result.notes, ensure_ascii=False), "source": source, "created_at": stamp,
        }
        columns = ", ".join(row)
        cursor = self.db.execute(f"INSERT INTO descriptions ({columns}) VALUES "
                                 f"({', '.join(':' + c for c in row)})", row)
        return cursor.lastrowid

    def fail(self, job_id: int, error: str, retry_in: float | None = None) -> None:
        """Record a failure: queued again after ``retry_in`` seconds, or failed for good (None)."""
        stamp = now()
        with self.transaction():
            if retry_in is None:
                self.db.execute("UPDATE jobs SET status = 'failed', error = ?, not_before = NULL, "
                                "finished_at = ?, updated_at = ? WHERE id = ?", [error, stamp, stamp, job_id])
            else:
                self.db.execute("UPDATE jobs SET status = 'queued', error = ?, not_before = ?, updated_at = ? "
                                "WHERE id = ?", [error, later(retry_in), stamp, job_id])

    def requeue(self, job_id: int, delay: float | None = None) -> None:
        """Put a running job back (stopped by SIGTERM, file changed): the attempt does not count."""
        with self.transaction():
            self.db.execute("UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0), "
                            "not_before = ?, started_at = NULL, updated_at = ? WHERE id = ? AND status = 'running'",
                            [later(delay) if delay else None, now(), job_id])

    def recover(self, max_attempts: int) -> tuple[list, list]:
        """At start-up: jobs left running by a crash go back to the queue, or fail after max_attempts."""
        stamp = now()
        with self.transaction():
            rows = list(self.db.query("SELECT * FROM jobs WHERE status = 'running' ORDER BY id"))
            requeued, failed = [], []
            for row in rows:
                if row["attempts"] >= max_attempts:
                    error = (f"the daemon stopped during each of {row['attempts']} attempts "
                             f"(it may crash on this file; `rkvideo retry` tries again)")
                    self.db.execute("UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, updated_at = ? "
                                    "WHERE id = ?", [error, stamp, stamp, row["id"]])
                    failed.append(row)
                else:
                    self.db.execute("UPDATE jobs SET status = 'queued', started_at = NULL, updated_at = ?, "
                                    "error = coalesce(error, 'interrupted: the daemon stopped while describing') "
                                    "WHERE id = ?", [stamp, row["id"]])
                    requeued.append(row)
        return requeued, failed

    def retry(self, ids: list | None = None, statuses: tuple = ("failed",)) -> int:
        """Queue jobs again with fresh attempts: the given ids, or every job with one of ``statuses``."""
        stamp = now()
        reset = ("status = 'queued', attempts = 0, error = NULL, not_before = NULL, duplicate_of = NULL, "
                 "started_at = NULL, finished_at = NULL, updated_at = ?")
        with self.transaction():
            if ids:
                marks = ", ".join("?" for _ in ids)
                cursor = self.db.execute(f"UPDATE jobs SET {reset} WHERE status != 'running' AND id IN ({marks})",
                                         [stamp, *ids])
            else:
                marks = ", ".join("?" for _ in statuses)
                cursor = self.db.execute(f"UPDATE jobs SET {reset} WHERE status IN ({marks})", [stamp, *statuses])
            return cursor.rowcount


def _decode(row: dict) -> dict:
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def save_result(db_path: str | os.PathLike, result) -> int:
    """``rkvideo describe --db``: store one result under the job of its (first) input file.

    One transaction for the job and its description: a job must never be ``done`` without one (the
    daemon would never describe that file).
    """
    path = os.path.abspath(result.inputs[0])
    store = Store(db_path)
    try:
        if not valid_name(path):
            raise StoreError(f"{db_text(path)}: file name is not valid UTF-8 (rename the file to store it)")
        st = os.stat(path)
        digest = fingerprint(path)
        with store.transaction():
            job = store.job_at(path)
            if job is None or job["hash"] != digest:
                store._put(path, "done", size=st.st_size, mtime=st.st_mtime, digest=digest)
                job = store.job_at(path)
            description = store._insert_description(job, result, None, "describe", now())
            if job["status"] != "running":      # a running daemon job commits its own row
                store.db.execute("UPDATE jobs SET status = 'done', error = NULL, not_before = NULL, "
                                 "finished_at = ?, updated_at = ? WHERE id = ?", [now(), now(), job["id"]])
        return description
    except OSError as exc:
        raise StoreError(f"{path}: cannot store the result: {exc.strerror}") from None
    except sqlite3.Error as exc:
        raise StoreError(f"{store.path}: cannot store the result for {path}: {exc}") from None
    finally:
        store.close()


# ------------------------------------------------------------- commands

def add_parser(sub) -> None:
    from .cli import _add_config, _formatter
    _list_parser(sub, _formatter, _add_config)
    _show_parser(sub, _formatter, _add_config)
    _search_parser(sub, _formatter, _add_config)
    _retry_parser(sub, _formatter, _add_config)


def _add_db(p, add_config) -> None:
    p.add_argument("--db", metavar="PATH", help="database file (default: watch.db from the config, "
                                               "~/.local/share/rkvideo/rkvideo.db)")
    add_config(p)


def _list_parser(sub, formatter, add_config) -> None:
    p = sub.add_parser(
        "list", formatter_class=formatter, help="list recordings in the database and their status",
        description="List the jobs of the database: one per recording, with its status (queued, running, done, "
                    "failed, skipped), attempts and last error or duplicate.",
        epilog="""examples:
  rkvideo list                                 every recording
  rkvideo list --status failed                 what went wrong, with the reason
  rkvideo list --json | jq '.[] | select(.status == "done") | .path'""")
    p.add_argument("--status", choices=STATUSES, help="only jobs with this status")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    _add_db(p, add_config)
    p.set_defaults(func=cmd_list)


def _show_parser(sub, formatter, add_config) -> None:
    p = sub.add_parser(
        "show", formatter_class=formatter, help="show one recording's job and descriptions",
        description="Show the job of one recording (by path or job id) and every description stored for it, "
                    "newest last: text, model, prompt, frames used, token counts and timings.",
        epilog="""examples:
  rkvideo show /srv/cameras/door/2024-05-01_0800.mp4
  rkvideo show 42
  rkvideo show 42 --json | jq -r '.descriptions[-1].text'""")
    p.add_argument("target", metavar="PATH|ID", help="a recording's path or a job id (from list or search)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_db(p, add_config)
    p.set_defaults(func=cmd_show)


def _search_parser(sub, formatter, add_config) -> None:
    p = sub.add_parser(
        "search", formatter_class=formatter, help="full-text search over the descriptions",
        description="Search every stored description (SQLite FTS5, best match first). Each word must appear; "
                    "matches are shown in [brackets] in a snippet.",
        epilog="""examples:
  rkvideo search "red car"
  rkvideo search delivery --limit 5 --json
  rkvideo search 'dog OR cat' --raw             FTS5 syntax: OR, NOT, "exact phrase", prefix*""")
    p.add_argument("query", metavar="QUERY", help="words to find")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="at most N results (default 20)")
    p.add_argument("--raw", action="store_true", help="pass QUERY to FTS5 unquoted (operators allowed)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    _add_db(p, add_config)
    p.set_defaults(func=cmd_search)


def _retry_parser(sub, formatter, add_config) -> None:
    p = sub.add_parser(
        "retry", formatter_class=formatter, help="queue failed (or chosen) recordings again",
        description="Put jobs back in the queue with fresh attempts; a running `rkvideo watch` picks them up "
                    "within a second. With no arguments every failed job is retried. Naming a done recording "
                    "describes it again (e.g. after changing the model or prompt): a new description is added, "
                    "the old one kept.",
        epilog="""examples:
  rkvideo retry                                every failed job
  rkvideo retry --failed --skipped             failed jobs and skipped duplicates/bad files
  rkvideo retry 42 /srv/cameras/door/a.mp4     these recordings, whatever their status""")
    p.add_argument("targets", nargs="*", metavar="PATH|ID", help="recordings to queue again")
    p.add_argument("--failed", action="store_true", help="every failed job (the default with no PATH|ID)")
    p.add_argument("--skipped", action="store_true", help="every skipped job")
    _add_db(p, add_config)
    p.set_defaults(func=cmd_retry)


def db_path(args) -> Path:
    from .cli import load_config
    if getattr(args, "db", None):
        return Path(args.db).expanduser()
    config = load_config(args)
    return config.resolve_path(config.watch.db)


def _open(args) -> Store:
    from .cli import CLIError
    try:
        return Store(db_path(args), create=False)
    except StoreError as exc:
        raise CLIError(str(exc)) from None


def _find(store: Store, target: str) -> dict | None:
    if target.isdigit() and not os.path.exists(target):
        return store.job(int(target))
    for candidate in (os.path.abspath(target), os.path.realpath(target)):
        job = store.job_at(candidate)
        if job:
            return job
    return None


def _note(job: dict) -> str:
    if job["status"] == "done" or (job["status"] == "queued" and not job["error"]):
        n = job.get("descriptions", 0)
        return f"{n} description{'s' if n != 1 else ''}" if n else ""
    return job["error"] or ""


def cmd_list(args) -> int:
    store = _open(args)
    try:
        jobs = store.jobs(args.status)
    finally:
        store.close()
    if args.json:
        print(json.dumps(jobs, ensure_ascii=False, indent=1))
        return 0
    if jobs:
        width = max(2, *(len(str(j["id"])) for j in jobs))
        print(f"{'id':>{width}}  {'status':<8} tries  path")
        for j in jobs:
            note = _note(j)
            print(f"{j['id']:>{width}}  {j['status']:<8} {j['attempts']:>5}  {j['path']}"
                  + (f"  — {note}" if note else ""))
    summary = {}
    for j in jobs:
        summary[j["status"]] = summary.get(j["status"], 0) + 1
    parts = ", ".join(f"{summary[s]} {s}" for s in STATUSES if s in summary)
    print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}" + (f": {parts}" if parts else ""), file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    from .cli import CLIError
    store = _open(args)
    try:
        job = _find(store, args.target)
        if job is None:
            raise CLIError(f"{args.target}: not in the database {store.path} (see `rkvideo list`)")
        job["descriptions"] = store.descriptions(job["id"])
    finally:
        store.close()
    if args.json:
        print(json.dumps(job, ensure_ascii=False, indent=1))
        return 0
    print(f"{job['path']}\n  job {job['id']}: {job['status']}, {job['attempts']} attempt(s)")
    if job["size"] is not None:
        duration = f", {job['duration']:.1f} s" if job["duration"] else ""
        print(f"  size {job['size']} bytes{duration}, content {(job['hash'] or '?')[:16]}")
    if job["error"]:
        print(f"  {'note' if job['status'] in ('done', 'skipped') else 'error'}: {job['error']}")
    if job["duplicate_of"]:
        print(f"  duplicate of job {job['duplicate_of']}")
    for d in job["descriptions"]:
        stamps = ", ".join(f"{f['seconds']:.1f}" for f in d["frames"])
        print(f"\ndescription {d['id']} ({d['created_at']}, {d['source']})")
        print(f"  model {d['model']}: vision {d['vision_model']}, llm {d['llm_model']}")
        print(f"  prompt: {d['prompt']}")
        print(f"  frames ({d['frame_count']}) at s: {stamps}")
        print(f"  tokens: {d['prompt_tokens']} prompt ({d['vision_tokens']} vision) + {d['new_tokens']} new")
        print(f"  timings: {timings_text(d['timings'])}")
        print()
        print(d["text"])
    return 0


def cmd_search(args) -> int:
    from .cli import CLIError
    if args.limit < 1:
        raise CLIError(f"--limit must be at least 1, got {args.limit}")
    store = _open(args)
    try:
        hits = store.search(args.query, args.limit, raw=args.raw)
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    finally:
        store.close()
    if args.json:
        print(json.dumps(hits, ensure_ascii=False, indent=1))
        return 0
    for hit in hits:
        print(f"{hit['path']}  (job {hit['job_id']}, description {hit['id']}, {hit['model']})")
        print(f"  {' '.join(hit['snippet'].split())}")
    if not hits:
        print(f"no description matches {args.query!r}", file=sys.stderr)
        return 1
    return 0


def cmd_retry(args) -> int:
    from .cli import CLIError
    store = _open(args)
    try:
        ids = []
        for target in args.targets:
            job = _find(store, target)
            if job is None:
                raise CLIError(f"{target}: not in the database {store.path} (see `rkvideo list`)")
            ids.append(job["id"])
        statuses = tuple(s for s, on in (("failed", args.failed), ("skipped", args.skipped)) if on)
        if ids and statuses:
            raise CLIError("give PATH|ID or --failed/--skipped, not both")
        count = store.retry(ids or None, statuses or ("failed",))
    finally:
        store.close()
    print(f"{count} job{'s' if count != 1 else ''} queued again")
    return 0
