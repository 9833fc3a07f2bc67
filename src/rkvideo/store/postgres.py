"""The job store in a PostgreSQL database that several boards share: one queue, many daemons.

Why PostgreSQL: SQLite's locking does not work over NFS/SMB, and queues built
on a visibility timeout hand a long job to a second worker when the timeout
passes. PostgreSQL gives ``SELECT … FOR UPDATE SKIP LOCKED`` (two workers
never take one job, and neither waits for the other) and ties locks to a
connection, which is what tells a live worker from a dead one here.

**Dead workers: the claim is a session lock, held by the worker's connection
for the length of the job.** Claiming marks the job ``running`` (attempt
counted, worker named) and, in the same transaction, takes a session-level
advisory lock on the job's id; the lock lives as long as the worker's
database session. No transaction stays open while a recording is described
(so ``idle_in_transaction_session_timeout`` may be anything and vacuum is
never held back), yet the claim is still owned by a connection:

* kill -9, a crash or ``pg_terminate_backend``: the socket closes, the server
  ends the session and drops its locks at once;
* a power cut or a pulled cable: the server's TCP keepalives (set per session
  below, ~30 s) end the session, and with it the lock.

A ``running`` job whose lock anyone can take is therefore an orphan. Every
daemon sweeps for those at start-up and every few seconds (``recover``); it
never touches a job whose worker's session is alive. Why not a lease with a
heartbeat and a fencing token: a lease must be long enough to survive a slow
heartbeat and so makes every kill cost that long, and it needs a heartbeat
thread beside the runtime; the session lock is released the moment a process
dies, and its fence is the connection itself.

**Exactly once.** A worker commits its description only on the session that
claimed the job, and only while the row is still ``running`` and names that
worker (``finish`` checks both in the same transaction that inserts the
description and marks the job ``done``). If its session ended meanwhile, the
job was (or will be) queued again for someone else, and the late result is
refused with ``LostClaim``: that attempt is lost, nothing else. The store
reconnects by itself on the next call, so the worker goes on with the next job.

**Intake from many boards.** A job is keyed by its watched folder's *name* and
the path below it (``names.py``); ``put`` inserts with ``ON CONFLICT DO
NOTHING`` and otherwise updates the row only if it can lock it at once (``FOR
UPDATE SKIP LOCKED``: another board writing the same job right now wins), and
never resets a job that is running, or queued/done with the same content, so
two boards scanning one folder queue each recording once.

Times are the boards' clocks (keep them in sync with NTP), ISO 8601 UTC text as on SQLite.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
from collections.abc import Callable, Iterable

import psycopg
from psycopg import conninfo, sql
from psycopg.rows import dict_row

from ..config import hide_password
from . import pg_browse, pg_schema, search as text_search
from .base import (Filters, Job, LostClaim, Messages, MissingSidecar, Outgoing, Status, StoreError, db_text, later,
                   now, same_content)
from .names import RootNames, folder_of
from .rows import FORGOTTEN, INTERRUPTED, KEPT, Reads, decode, described_file, description_row, stopped_each_time

# Advisory lock namespaces (the first of the two int4 keys): a job's claim, schema changes, and the delivery
# of one notification target's outbox (one board's sender at a time, see ``outbox``).
JOB_LOCKS = 0x726B7601
SCHEMA_LOCK = 0x726B7602
OUTBOX_LOCKS = 0x726B7603

# Client-side TCP keepalives (libpq) and the server side's (per session): a dead peer is noticed within
# about 30 s instead of the kernel's two hours. Settings in the URL win.
CLIENT_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
                     "keepalives_count": "3", "connect_timeout": "10"}
SERVER_KEEPALIVES = ("-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
                     "-c tcp_user_timeout=30000")
MIN_SERVER = 120000          # generated columns
FINAL_ON_PUT = (Status.FAILED, Status.SKIPPED)
FORGET_WORKERS = 7 * 86400   # a worker not heard of for a week leaves the workers table


class PostgresStore(Reads):
    """One connection to the database; use one store per thread. ``roots``: name -> this board's folder."""

    mark = "%s"

    def __init__(self, url: str, *, create: bool = True, readonly: bool = False, roots: dict | None = None,
                 on_busy: Callable[[float], None] | None = None):
        self.url, self.location, self.readonly = url, hide_password(url), readonly
        self.names = RootNames(roots)
        self.conn: psycopg.Connection | None = None
        self.session = 0                   # which connection this is (a claim belongs to one)
        self.claimed: dict[int, tuple[int, str]] = {}     # job id -> (session, worker) of live claims
        # SQLite's wait for another process's lock; the server queues lock waits itself, and no transaction
        # here holds a row lock for longer than a statement or two.
        self.on_busy = on_busy or (lambda waited: None)
        self._connect()
        try:
            self._setup(create and not readonly)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        try:
            params = conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"{self.location}: not a usable PostgreSQL URL: {exc}") from None
        for key, value in CLIENT_KEEPALIVES.items():
            params.setdefault(key, value)
        options = params.get("options", "")
        if "tcp_keepalives" not in options:
            options += " " + SERVER_KEEPALIVES
        if self.readonly:
            options += " -c default_transaction_read_only=on"
        params["options"] = options.strip()
        # Which process a session belongs to, in pg_stat_activity: "rkvideo host:pid".
        params.setdefault("application_name", f"rkvideo {socket.gethostname()}:{os.getpid()}"[:63])
        try:
            self.conn = psycopg.connect(**params, autocommit=True, row_factory=dict_row)
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: cannot connect: {first_line(exc)} (is the server running and "
                             f"reachable, do the user and the database exist? see README, Several boards)") from None
        self.session += 1

    def _connection(self) -> psycopg.Connection:
        """The connection, opened again if the last one broke (the claims it held are gone with it)."""
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                self.conn.close()
            self._connect()
        return self.conn

    def _error(self, exc: Exception, doing: str = "") -> StoreError:
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StoreError(f"{self.location}: opened read-only; this command cannot write")
        return StoreError(f"{self.location}: {doing}{': ' if doing else ''}{first_line(exc)}")

    @contextlib.contextmanager
    def _tx(self, doing: str = "", claim: int | None = None, pipeline: bool = False):
        """One transaction (a savepoint inside another); a database failure becomes a StoreError — a
        ``LostClaim`` when it ended the session that holds the claim on job ``claim``. ``pipeline``:
        statements go out without waiting for each answer (fewer round trips)."""
        conn = self._connection()
        try:
            with conn.pipeline() if pipeline else contextlib.nullcontext(), conn.transaction(), \
                    conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            if claim in self.claimed and (conn.closed or conn.broken):
                raise self._lost(claim) from exc
            raise self._error(exc, doing) from exc

    def _rows(self, query: str, params=()) -> list[dict]:
        """A read; outside a transaction, one whose connection turns out to be gone is run again on a new
        one (a read changes nothing, and the claims of the old session are fenced off anyway)."""
        conn = self._connection()
        alone = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            return conn.execute(query, params).fetchall()
        except psycopg.Error as exc:
            if not (isinstance(exc, psycopg.OperationalError) and alone and (conn.closed or conn.broken)):
                raise self._error(exc) from exc
        try:
            return self._connection().execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _job(self, row: dict) -> Job:
        job = Job.from_row(row)
        job.path = self.names.local(row.get("root"), row.get("relpath"), row["path"])
        return job

    # ------------------------------------------------------------ set-up

    def _setup(self, create: bool) -> None:
        server = self._connection().info.server_version
        if server < MIN_SERVER:
            raise StoreError(f"{self.location}: rkvideo needs PostgreSQL 12 or newer; the server is "
                             f"{server // 10000}.{server % 10000}")
        version = self._version()
        if version is None and not create:
            raise StoreError(f"{self.location}: no rkvideo database here yet (run `rkvideo watch` or "
                             f"`rkvideo describe --db` with this URL first)")
        self._check_version(version)
        if not self.readonly and self._pending():
            self._migrate()

    def _version(self) -> int | None:
        if not self.has_table("schema_version"):
            return None
        row = self._rows("SELECT max(version) AS v FROM schema_version")
        return row[0]["v"] if row else None

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > pg_schema.SCHEMA_VERSION:
            raise StoreError(f"{self.location}: database schema version {version} is newer than this rkvideo "
                             f"understands ({pg_schema.SCHEMA_VERSION}); upgrade rkvideo")

    def _applied(self) -> set:
        if not self.has_table(pg_schema.MIGRATIONS_TABLE):
            return set()
        return {r["name"] for r in self._rows(f"SELECT name FROM {pg_schema.MIGRATIONS_TABLE}")}

    def _pending(self) -> list:
        applied = self._applied()
        return [name for name, _ in pg_schema.STEPS if name not in applied]

    def _migrate(self) -> None:
        """Apply the pending steps in one transaction, once, whoever else opens the database now."""
        with self._tx("cannot create or upgrade the schema") as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", [SCHEMA_LOCK])
            version = self._version()
            if version is None:
                foreign = self._tables() - pg_schema.TABLES
                if foreign:
                    raise StoreError(f"{self.location}: not an rkvideo database (it has other tables: "
                                     f"{', '.join(sorted(foreign))}); use another database or schema")
            self._check_version(version)
            cur.execute(f"CREATE TABLE IF NOT EXISTS {pg_schema.MIGRATIONS_TABLE} "
                        "(name text PRIMARY KEY, applied_at text)")
            applied = self._applied()
            for name, statements in pg_schema.STEPS:
                if name in applied:
                    continue
                for statement in statements:
                    cur.execute(statement)
                cur.execute(f"INSERT INTO {pg_schema.MIGRATIONS_TABLE} (name, applied_at) VALUES (%s, %s)",
                            [name, now()])

    def _tables(self) -> set:
        return {r["table_name"] for r in self._rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}

    def lock_daemon(self) -> None:
        """Nothing to lock: any number of daemons share this database (see the module docstring)."""

    def files(self) -> list[str]:
        """No files: the database lives on its server (thumbnails too, see ``pg_schema``)."""
        return []

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ keys

    def _place(self, path: str, root: str | None) -> tuple[str | None, str | None]:
        """(root name, relpath) for a path: by the named folders, else by ``root`` (a folder) if given."""
        name, rel = self.names.split(path)
        if name is None and root is not None:
            folder = db_text(str(root)).rstrip("/")
            if db_text(path).startswith(folder + "/"):
                name, rel = self.names.name_of(folder), db_text(path)[len(folder) + 1:]
        return name, rel

    def _key(self, path: str, root: str | None = None) -> str:
        name, rel = self._place(path, root)
        return f"{name}/{rel}" if name else db_text(path)

    def _prefix(self, folder: str) -> str:
        """The key prefix of everything below ``folder`` (a named folder's own prefix is its name)."""
        folder = db_text(folder).rstrip("/")
        for name, known in self.names.folders.items():
            if known == folder:
                return name + "/"
        return self._key(folder) + "/"

    # ------------------------------------------------------------ reads

    def job_at(self, path: str) -> Job | None:
        job = self._one("SELECT * FROM jobs WHERE key = %s", [self._key(path)])
        if job is None:       # a path this board cannot name: as some board stored it
            job = self._one("SELECT * FROM jobs WHERE path = %s ORDER BY id LIMIT 1", [db_text(path)])
        return job

    def jobs_under(self, folder: str) -> list[Job]:
        prefix, absolute = self._prefix(folder), db_text(folder.rstrip("/")) + "/"
        return self._jobs("SELECT * FROM jobs WHERE left(key, %s) = %s OR (root IS NULL AND left(path, %s) = %s) "
                          "ORDER BY id", [len(prefix), prefix, len(absolute), absolute])

    def original(self, digest: str, path: str) -> Job | None:
        return self._one("SELECT * FROM jobs WHERE hash = %s AND key <> %s AND status <> 'skipped' "
                         "ORDER BY id LIMIT 1", [digest, self._key(path)])

    def search(self, query: str, limit: int = 20, raw: bool = False) -> list[dict]:
        """Descriptions matching ``query``, best first (``ts_rank``), each with a snippet (``ts_headline``).

        Every word must appear (``plainto_tsquery``), unless ``raw``: then web-search syntax applies
        (``websearch_to_tsquery``: ``or``, ``-word``, ``"a phrase"``). English stemming: "cars" finds "car".
        A word in a script written without spaces (Chinese, Japanese, Thai…) is found inside longer runs of
        text, as on SQLite (store/search.py); here by a scan of the text.
        """
        if not raw:
            terms = text_search.words(query)
            if not terms:
                return []
            if text_search.by_substring(terms):
                return self._substring_search(terms, limit)
        return self._matches("d", "d.path, d.model, d.prompt, d.created_at", "descriptions d", query, limit, raw)

    def _substring_search(self, terms: list, limit: int) -> list[dict]:
        """Descriptions holding every word of ``terms`` as a substring, newest first."""
        found = " AND ".join("strpos(lower(d.text), lower(%s)) > 0" for _ in terms)
        rows = self._rows(
            "SELECT d.id, d.job_id, d.path, d.model, d.prompt, d.created_at, d.text AS text_, j.path AS job_path, "
            f"j.root, j.relpath FROM descriptions d LEFT JOIN jobs j ON j.id = d.job_id WHERE {found} "
            "ORDER BY d.id DESC LIMIT %s", [*terms, limit])
        hits = []
        for r in rows:
            local = self.names.local(r.pop("root"), r.pop("relpath"), r.pop("job_path") or r["path"])
            snippet = text_search.snippet(r.pop("text_"), terms)
            hits.append({**r, "path": local, "snippet": snippet, "rank": None})
        return hits

    def search_events(self, query: str, limit: int = 20, raw: bool = False) -> list[dict]:
        """Moments of stored timelines matching ``query``, best first, each with its recording, times
        (``start``/``end`` in seconds) and a snippet; as ``search`` for the query syntax."""
        columns = 'e.description_id, d.path, d.model, e.start_s AS start, e.end_s AS "end", e.score, d.created_at'
        return self._matches("e", columns, "events e JOIN descriptions d ON d.id = e.description_id", query, limit,
                             raw)

    def _matches(self, alias: str, columns: str, tables: str, query: str, limit: int, raw: bool) -> list[dict]:
        """The rows of ``tables`` whose ``alias`` (descriptions or events) matches ``query``, best first: id,
        job_id, ``columns`` (``path`` becomes this machine's), snippet, rank (lower is better)."""
        parse = "websearch_to_tsquery" if raw else "plainto_tsquery"
        rows = self._rows(
            f"WITH q AS (SELECT {parse}('english', %s) AS q), hits AS (SELECT {alias}.id, {alias}.job_id, {columns}, "
            f"{alias}.text AS text_, ts_rank({alias}.search, q.q) AS score_ FROM {tables}, q WHERE {alias}.search "
            f"@@ q.q ORDER BY score_ DESC, {alias}.id LIMIT %s) "
            "SELECT h.*, j.path AS job_path, j.root, j.relpath, ts_headline('english', h.text_, q.q, 'StartSel=[, "
            "StopSel=], MaxWords=24, MinWords=8, ShortWord=2') AS snippet, -h.score_ AS rank "
            "FROM hits h CROSS JOIN q LEFT JOIN jobs j ON j.id = h.job_id ORDER BY h.score_ DESC, h.id",
            [query, limit])
        hits = []
        for r in rows:
            local = self.names.local(r.pop("root"), r.pop("relpath"), r.pop("job_path") or r["path"])
            hits.append({**{k: v for k, v in r.items() if not k.endswith("_")}, "path": local})
        return hits

    # ------------------------------------------------------------ queue writes

    def put(self, path: str, status: Status, *, root: str | None = None, size=None, mtime=None, digest=None,
            duration=None, error=None, duplicate_of=None, messages: Messages | None = None) -> int:
        """Insert or reset the job for ``path`` (see the module docstring for what a concurrent scan may not
        reset); attempts start again at 0. ``messages(job_id)`` go to the outbox in the same transaction.
        A put by the worker that holds the job ends its claim."""
        with self._tx(f"cannot queue {db_text(path)}") as cur:
            job_id = self._put(cur, path, status, root=root, size=size, mtime=mtime, digest=digest,
                               duration=duration, error=error, duplicate_of=duplicate_of)
            if messages is not None:
                self._enqueue(cur, messages(job_id))
            self._release(cur, job_id)
        self.claimed.pop(job_id, None)
        return job_id

    def _put(self, cur, path: str, status: Status, *, root=None, size=None, mtime=None, digest=None,
             duration=None, error=None, duplicate_of=None) -> int:
        stamp, status = now(), Status(status)
        name, rel = self._place(path, root)
        key = f"{name}/{rel}" if name else db_text(path)
        values = {"path": db_text(path), "root": name, "relpath": rel, "size": size, "mtime": mtime,
                  "hash": digest, "duration": duration, "status": status.value, "error": error,
                  "duplicate_of": duplicate_of, "stamp": stamp,
                  "finished": stamp if status in FINAL_ON_PUT else None}
        cur.execute("INSERT INTO jobs (path, root, relpath, size, mtime, hash, duration, status, attempts, error, "
                    "duplicate_of, created_at, updated_at, finished_at) VALUES (%(path)s, %(root)s, %(relpath)s, "
                    "%(size)s, %(mtime)s, %(hash)s, %(duration)s, %(status)s, 0, %(error)s, %(duplicate_of)s, "
                    "%(stamp)s, %(stamp)s, %(finished)s) ON CONFLICT (key) DO NOTHING RETURNING id", values)
        row = cur.fetchone()
        if row is not None:
            return row["id"]
        cur.execute("SELECT id, hash, status FROM jobs WHERE key = %s FOR UPDATE SKIP LOCKED", [key])
        old = cur.fetchone()
        if old is None:         # another board is writing this very job now: its write stands
            cur.execute("SELECT id FROM jobs WHERE key = %s", [key])
            return cur.fetchone()["id"]
        same = digest is not None and old["hash"] == digest
        mine = old["id"] in self.claimed
        if (old["status"] == Status.RUNNING and not mine) or (same and old["status"] in (Status.QUEUED, Status.DONE)):
            return old["id"]    # being described elsewhere, or queued/described with this content already
        if old["hash"] != digest and old["status"] != Status.DONE:
            self._promote_duplicate(cur, old["id"], stamp)    # its old content was never described
        if old["hash"] != digest:
            _forget_kept(cur, old["id"])    # moments of the old content must not be resumed
        cur.execute("UPDATE jobs SET path = %(path)s, root = %(root)s, relpath = %(relpath)s, size = %(size)s, "
                    "mtime = %(mtime)s, hash = %(hash)s, duration = %(duration)s, status = %(status)s, attempts = 0, "
                    "error = %(error)s, duplicate_of = %(duplicate_of)s, not_before = NULL, updated_at = %(stamp)s, "
                    "started_at = NULL, finished_at = %(finished)s WHERE id = %(id)s", {**values, "id": old["id"]})
        return old["id"]

    def _promote_duplicate(self, cur, job_id: int, stamp: str) -> Job | None:
        """As ``SqliteStore._promote_duplicate``: the oldest skipped copy of ``job_id`` is queued instead."""
        cur.execute("SELECT id FROM jobs WHERE duplicate_of = %s AND status = 'skipped' ORDER BY id LIMIT 1 "
                    "FOR UPDATE", [job_id])
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute("UPDATE jobs SET status = 'queued', duplicate_of = NULL, error = NULL, attempts = 0, "
                    "not_before = NULL, started_at = NULL, finished_at = NULL, updated_at = %s WHERE id = %s",
                    [stamp, row["id"]])
        promoted = self.job(row["id"])
        cur.execute("UPDATE jobs SET duplicate_of = %s, error = %s, updated_at = %s WHERE duplicate_of = %s",
                    [promoted.id, same_content(promoted), stamp, job_id])
        return promoted

    def touch(self, job_id: int, size: int, mtime: float) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE jobs SET size = %s, mtime = %s, updated_at = %s WHERE id = %s",
                        [size, mtime, now(), job_id])

    def move(self, job_id: int, path: str, *, root: str | None = None) -> None:
        """The job's file was renamed to ``path``. If another board recorded a job at that name already,
        the two are not merged (the other job stands)."""
        name, rel = self._place(path, root)
        key = f"{name}/{rel}" if name else db_text(path)
        with self._tx(f"cannot move job {job_id}") as cur:
            cur.execute("UPDATE jobs SET path = %s, root = %s, relpath = %s, updated_at = %s WHERE id = %s AND "
                        "NOT EXISTS (SELECT 1 FROM jobs other WHERE other.key = %s AND other.id <> %s)",
                        [db_text(path), name, rel, now(), job_id, key, job_id])

    def move_folder(self, src: str, dest: str, *, root: str | None = None) -> int:
        """A renamed folder: every job below ``src`` now lives below ``dest`` (keys, roots and paths)."""
        old = self._prefix(src)
        inside = db_text(dest.rstrip("/")) + "/"
        name, rel = self._place(inside + "-", root)       # where a file directly inside ``dest`` would be
        values = {"n": len(old), "old": old, "dest": inside, "stamp": now(), "root": name,
                  "rel": rel[:-1] if rel else None}
        rest = "substr(key, %(n)s + 1)"
        relpath = f"%(rel)s || {rest}" if name else "NULL"
        with self._tx(f"cannot move folder {src}") as cur:
            cur.execute(f"UPDATE jobs SET path = %(dest)s || {rest}, root = %(root)s, relpath = {relpath}, "
                        "updated_at = %(stamp)s WHERE left(key, %(n)s) = %(old)s", values)
            return cur.rowcount

    def drop(self, job_id: int, running: bool = False) -> tuple[str, Job | None]:
        """As ``SqliteStore.drop``; a running job is dropped only by the worker that holds it."""
        stamp = now()
        fenced = self._fence(job_id)
        with self._tx(f"cannot drop job {job_id}", claim=job_id) as cur:
            cur.execute("SELECT status, worker, EXISTS (SELECT 1 FROM descriptions WHERE job_id = jobs.id) "
                        "AS described FROM jobs WHERE id = %s FOR UPDATE", [job_id])
            row = cur.fetchone()
            if fenced and (row is None or row["status"] != Status.RUNNING or row["worker"] != fenced):
                raise self._lost(job_id)
            if row is None or (row["status"] == Status.RUNNING and not running):
                return "", None
            if row["described"]:
                if row["status"] != Status.DONE:
                    cur.execute("UPDATE jobs SET status = 'done', duplicate_of = NULL, not_before = NULL, "
                                "started_at = NULL, error = %s, finished_at = %s, updated_at = %s WHERE id = %s",
                                [KEPT, stamp, stamp, job_id])
                result = ("kept", None)
            else:
                promoted = self._promote_duplicate(cur, job_id, stamp)
                _forget_kept(cur, job_id)
                cur.execute("DELETE FROM jobs WHERE id = %s", [job_id])
                result = ("dropped", promoted)
            self._release(cur, job_id)
        self.claimed.pop(job_id, None)
        return result

    # ------------------------------------------------------------ claims

    def claim(self, worker: str) -> Job | None:
        """Take the oldest due queued job (in one of this board's named folders, when it has any), mark it
        running for ``worker`` and hold its session lock until ``finish``, ``fail``, ``requeue`` or ``drop``.

        One round trip: the statements are pipelined and the update picks its row with ``FOR UPDATE SKIP
        LOCKED`` and takes the lock in its own filter (one row, by its key). The commit does not wait
        for the server's disk: a claim lost in a server crash simply never happened — the job is queued,
        and the worker's ``finish`` is refused by the fence. When nothing was taken although a job is
        due (another worker held its row or its lock that instant), it tries again, a few times.
        """
        stamp = now()
        scope = " AND root = ANY(%(roots)s::text[])" if self.names else ""
        due = f"status = 'queued' AND (not_before IS NULL OR not_before <= %(now)s){scope}"
        values = {"now": stamp, "worker": worker, "roots": self.names.names(), "locks": JOB_LOCKS}
        for _ in range(3):
            row = self._claim_once(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = %(now)s, updated_at = "
                f"%(now)s, not_before = NULL, worker = %(worker)s WHERE id = (SELECT id FROM jobs WHERE {due} "
                "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) AND pg_try_advisory_lock(%(locks)s, id) RETURNING *",
                values)
            if row is not None:
                self.claimed[row["id"]] = (self.session, worker)
                return self._job(row)
            if not self._rows(f"SELECT EXISTS (SELECT 1 FROM jobs WHERE {due}) AS due", values)[0]["due"]:
                return None
        return None

    def _claim_once(self, statement: str, values: dict) -> dict | None:
        conn = self._connection()
        cur = conn.cursor()
        try:
            with conn.pipeline(), conn.transaction():
                cur.execute("SET LOCAL synchronous_commit TO off")
                cur.execute(statement, values)
            return cur.fetchone()
        except psycopg.Error as exc:
            raise self._error(exc, "cannot claim a job") from exc
        finally:
            cur.close()

    def _fence(self, job_id: int) -> str | None:
        """For a job this store claimed: the worker that holds it, or ``LostClaim`` if the session that
        claimed it has ended. None for a job it did not claim (no fence: a command acting on a job)."""
        claim = self.claimed.get(job_id)
        if claim is None:
            return None
        self._connection()
        if claim[0] != self.session:
            raise self._lost(job_id)
        return claim[1]

    def _lost(self, job_id: int) -> LostClaim:
        self.claimed.pop(job_id, None)
        return LostClaim(f"{self.location}: job {job_id} was given back while it was described (this worker's "
                         f"database session ended): the job is described again, unless this commit landed")

    def _release(self, cur, job_id: int) -> None:
        """Inside the transaction that gives up the claim, before its commit: the session lock goes at once
        (it is not transactional), so no claimer ever meets the lock on a job it can see queued, and a
        sweeper that sees the job still running waits for this transaction's row lock, then finds it
        changed. If the commit then fails, the job is an orphan and is given back; the claim is forgotten
        (``claimed``) only once the commit is done, so a second try is still fenced."""
        if job_id in self.claimed:
            cur.execute("SELECT pg_advisory_unlock(%s, %s)", [JOB_LOCKS, job_id])

    def _still_mine(self, cur, job_id: int, worker: str | None) -> None:
        """Inside a write transaction: the job is still running for ``worker`` (the fence)."""
        if worker is None:
            return
        cur.execute("SELECT 1 FROM jobs WHERE id = %s AND status = 'running' AND worker = %s FOR UPDATE",
                    [job_id, worker])
        if cur.fetchone() is None:
            raise self._lost(job_id)

    def finish(self, job: Job, result, *, timings: dict | None = None, source: str = "watch",
               before_commit: Callable[[], None] | None = None, messages: Messages | None = None,
               missing_sidecars: list[MissingSidecar] = ()) -> int:
        """Store the description (with its moments and thumbnails) and mark the job done, in one
        transaction, only if this worker still holds the job (else ``LostClaim``); with the outbox rows of
        ``messages(description_id)`` and the sidecars that could not be written. ``before_commit`` runs
        inside it, after every write.

        Two round trips: one statement updates the job (the fence: still running for this worker) and
        inserts the description only if it did, with the job's path at commit time; then the rest, the
        release of the claim and the commit, pipelined.
        """
        stamp = now()
        worker = self._fence(job.id)
        fence = " AND status = 'running' AND worker = %(worker)s" if worker else ""
        row = description_row(job, result, timings, source, stamp, "")
        del row["path"]
        values = {f"d_{k}": v for k, v in row.items()}
        values.update(id=job.id, worker=worker, stamp=stamp, names=list(self.names.folders),
                      folders=list(self.names.folders.values()))
        statement = sql.SQL(
            "WITH done AS (UPDATE jobs SET status = 'done', error = NULL, not_before = NULL, finished_at = %(stamp)s, "
            "updated_at = %(stamp)s WHERE id = %(id)s" + fence + " RETURNING path, root, relpath) "
            "INSERT INTO descriptions (path, {}) SELECT coalesce((%(folders)s::text[])[array_position("
            "%(names)s::text[], done.root)] || '/' || done.relpath, done.path), {} FROM done RETURNING id").format(
            sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(sql.Placeholder(f"d_{k}") for k in row))
        with self._tx(f"cannot store the description of job {job.id}", claim=job.id, pipeline=True) as cur:
            cur.execute(statement, values)
            inserted = cur.fetchone()
            if inserted is None:
                raise self._lost(job.id) if worker else StoreError(f"{self.location}: no job {job.id}")
            description = inserted["id"]
            self._description_extras(cur, job.id, description, result, stamp)
            cur.execute("DELETE FROM missing_sidecars WHERE job_id = %s", [job.id])
            cur.executemany("INSERT INTO missing_sidecars (job_id, kind, path, recording, text, error, failed_at) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            [(job.id, m.kind, m.path, m.recording, m.text, m.error, stamp) for m in missing_sidecars])
            if messages is not None:
                self._enqueue(cur, messages(description))
            self._release(cur, job.id)
            if before_commit is not None:
                before_commit()
        self.claimed.pop(job.id, None)
        return description

    def _description_extras(self, cur, job_id: int, description_id: int, result, stamp: str) -> None:
        """A description's moments (timeline mode; those kept for a resume are among them now) and thumbnails
        (the JPEGs themselves, see pg_schema)."""
        _forget_kept(cur, job_id)
        events = getattr(result, "events", None) or []
        if events:
            cur.executemany("INSERT INTO events (job_id, description_id, start_s, end_s, text, frames, score, "
                            "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                            [(job_id, description_id, e.start, e.end, e.text, json.dumps(e.frames, ensure_ascii=False),
                              e.score, stamp) for e in events])
        pictures = list(zip(result.frames, getattr(result, "thumbnails", None) or []))
        if pictures:
            cur.executemany("INSERT INTO thumbnails (description_id, seq, seconds, data, created_at) "
                            "VALUES (%s, %s, %s, %s, %s)",
                            [(description_id, seq, frame.get("seconds"), data, stamp)
                             for seq, (frame, data) in enumerate(pictures)])

    def _insert_description(self, cur, job: Job, result, timings, source: str, stamp: str,
                            where: dict | None = None) -> int:
        """The description row; ``where`` (path, root, relpath) is read here when the caller has not."""
        if where is None:
            cur.execute("SELECT path, root, relpath FROM jobs WHERE id = %s", [job.id])
            where = cur.fetchone()       # the path at commit time: a rename while describing moved the job
        row = description_row(job, result, timings, source, stamp,
                              self.names.local(where["root"], where["relpath"], where["path"]))
        columns = sql.SQL(", ").join(map(sql.Identifier, row))
        marks = sql.SQL(", ").join(sql.Placeholder(c) for c in row)
        cur.execute(sql.SQL("INSERT INTO descriptions ({}) VALUES ({}) RETURNING id").format(columns, marks), row)
        description = cur.fetchone()["id"]
        self._description_extras(cur, job.id, description, result, stamp)
        return description

    def fail(self, job_id: int, error: str, retry_in: float | None = None, *,
             messages: Messages | None = None) -> None:
        """Record a failure: queued again after ``retry_in`` seconds, or failed for good (None); the outbox
        rows of ``messages(job_id)`` in the same transaction."""
        stamp = now()
        worker = self._fence(job_id)
        with self._tx(f"cannot record the failure of job {job_id}", claim=job_id) as cur:
            self._still_mine(cur, job_id, worker)
            if messages is not None:
                self._enqueue(cur, messages(job_id))
            if retry_in is None:
                cur.execute("UPDATE jobs SET status = 'failed', error = %s, not_before = NULL, finished_at = %s, "
                            "updated_at = %s WHERE id = %s", [error, stamp, stamp, job_id])
            else:
                cur.execute("UPDATE jobs SET status = 'queued', error = %s, not_before = %s, updated_at = %s "
                            "WHERE id = %s", [error, later(retry_in), stamp, job_id])
            self._release(cur, job_id)
        self.claimed.pop(job_id, None)

    def requeue(self, job_id: int, delay: float | None = None) -> None:
        worker = self._fence(job_id)
        with self._tx(f"cannot queue job {job_id} again", claim=job_id) as cur:
            self._still_mine(cur, job_id, worker)
            cur.execute("UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0), not_before = %s, "
                        "started_at = NULL, updated_at = %s WHERE id = %s AND status = 'running'",
                        [later(delay) if delay else None, now(), job_id])
            self._release(cur, job_id)
        self.claimed.pop(job_id, None)

    def recover(self, worker: str, max_attempts: int, *,
                messages: Callable[[Job], Iterable[Outgoing]] | None = None) -> tuple[list[Job], list[Job]]:
        """Running jobs whose worker is gone — nobody holds their session lock — go back to the queue, or
        fail after ``max_attempts``. A live worker's job (its lock is held) is never touched, whichever
        board it runs on; ``worker`` (the caller) needs no exception. Returns (requeued, failed);
        ``messages(job)`` of each failed one go to the outbox in the same transaction."""
        requeued, failed = [], []
        running = [r["id"] for r in self._rows("SELECT id FROM jobs WHERE status = 'running' ORDER BY id")]
        for job_id in running:
            if job_id in self.claimed:
                continue                     # claimed on this very connection, which is alive
            with self._tx("cannot recover jobs") as cur:
                cur.execute("SELECT pg_try_advisory_xact_lock(%s, %s) AS free", [JOB_LOCKS, job_id])
                if not cur.fetchone()["free"]:
                    continue                 # its worker's session is alive
                cur.execute("SELECT * FROM jobs WHERE id = %s AND status = 'running' FOR UPDATE", [job_id])
                row = cur.fetchone()
                if row is None:
                    continue
                job, stamp = self._job(row), now()
                if job.attempts >= max_attempts:
                    error = stopped_each_time(job.attempts)
                    cur.execute("UPDATE jobs SET status = 'failed', error = %s, finished_at = %s, updated_at = %s "
                                "WHERE id = %s", [error, stamp, stamp, job_id])
                    failed.append(job)
                    if messages is not None:
                        self._enqueue(cur, messages(dataclasses.replace(job, status=Status.FAILED, error=error)))
                else:
                    cur.execute("UPDATE jobs SET status = 'queued', started_at = NULL, updated_at = %s, error = "
                                "coalesce(error, %s) WHERE id = %s", [stamp, INTERRUPTED, job_id])
                    requeued.append(job)
        with self._tx() as cur:
            cur.execute("DELETE FROM workers WHERE seen_at < %s", [later(-FORGET_WORKERS)])
        return requeued, failed

    def retry(self, ids: list[int] | None = None, statuses: tuple = (Status.FAILED,)) -> int:
        stamp = now()
        reset = ("status = 'queued', attempts = 0, error = NULL, not_before = NULL, duplicate_of = NULL, "
                 "started_at = NULL, finished_at = NULL, updated_at = %s")
        with self._tx("cannot queue jobs again") as cur:
            if ids:
                cur.execute(f"UPDATE jobs SET {reset} WHERE status <> 'running' AND id = ANY(%s::integer[])",
                            [stamp, list(ids)])
            else:
                cur.execute(f"UPDATE jobs SET {reset} WHERE status = ANY(%s::text[])",
                            [stamp, [Status(s).value for s in statuses]])
            return cur.rowcount

    def save_result(self, result) -> int:
        """``rkvideo describe --db``: as ``SqliteStore.save_result``, in one transaction."""
        path, st, digest = described_file(result)
        with self._tx(f"cannot store the result for {path}") as cur:
            job = self.job_at(path)
            if job is None or job.hash != digest:
                self._put(cur, path, Status.DONE, size=st.st_size, mtime=st.st_mtime, digest=digest)
                job = self.job_at(path)
            stamp = now()
            description = self._insert_description(cur, job, result, None, "describe", stamp)
            if job.status != Status.RUNNING:
                _mark_done(cur, job.id, stamp)
        return description

    # ------------------------------------------------------------ moments, sidecars

    def events(self, description_id: int) -> list[dict]:
        """The description's timeline moments in time order: start, end (seconds), text, frames, score."""
        rows = self._rows('SELECT id, start_s AS start, end_s AS "end", text, frames, score FROM events '
                          "WHERE description_id = %s ORDER BY start_s, id", [description_id])
        return [decode(row) for row in rows]

    def keep_event(self, job_id: int, event) -> int:
        """A finished moment of a timeline still being described, kept (``description_id`` NULL) so a
        restart after a crash goes on from there; ``finish`` attaches the moments to the description. Fenced
        like ``finish``: a worker whose claim was given back keeps nothing (``LostClaim``)."""
        worker = self._fence(job_id)
        with self._tx("cannot keep a moment", claim=job_id) as cur:
            self._still_mine(cur, job_id, worker)
            cur.execute("INSERT INTO events (job_id, description_id, start_s, end_s, text, frames, score, created_at) "
                        "VALUES (%s, NULL, %s, %s, %s, %s, %s, %s) RETURNING id",
                        [job_id, event.start, event.end, event.text, json.dumps(event.frames, ensure_ascii=False),
                         event.score, now()])
            return cur.fetchone()["id"]

    def kept_events(self, job_id: int) -> list[dict]:
        """The moments kept by ``keep_event`` for this job, in time order (start, end, text, frames, score)."""
        rows = self._rows('SELECT id, start_s AS start, end_s AS "end", text, frames, score FROM events '
                          "WHERE job_id = %s AND description_id IS NULL ORDER BY start_s, id", [job_id])
        return [decode(row) for row in rows]

    def missing_sidecars(self, ids: list[int] | None = None) -> list[MissingSidecar]:
        """Sidecars still to be written, by job (only those of ``ids`` when given)."""
        where = " WHERE job_id = ANY(%s::integer[])" if ids else ""
        rows = self._rows(f"SELECT * FROM missing_sidecars{where} ORDER BY job_id, kind", [list(ids)] if ids else [])
        return [MissingSidecar(**row) for row in rows]

    def sidecar_written(self, job_id: int, kind: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM missing_sidecars WHERE job_id = %s AND kind = %s", [job_id, kind])

    def sidecar_failed(self, job_id: int, kind: str, error: str) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE missing_sidecars SET error = %s, failed_at = %s WHERE job_id = %s AND kind = %s",
                        [error, now(), job_id, kind])

    # ------------------------------------------------------------ the outbox

    def _enqueue(self, cur, messages: Iterable[Outgoing]) -> None:
        """Outbox rows, inside the caller's transaction."""
        stamp = now()
        cur.executemany("INSERT INTO outbox (message, target, topic, payload, retain, job_id, created_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [(m.message, m.target, m.topic, m.payload, int(m.retain), m.job_id, stamp) for m in messages])

    def outbox(self, target: str | None = None, limit: int | None = None) -> list[dict]:
        """Messages waiting for delivery, oldest first (those of ``target`` only, the first ``limit``).

        For one ``target`` (a sender delivering it), this session first takes the target's session lock
        and keeps it: several boards run senders, and one at a time may deliver a target, or messages would
        go out twice. Another board's sender holds it: nothing to deliver here (it is taken over when that
        board's session ends)."""
        if target is not None and not self._rows("SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS mine",
                                                 [OUTBOX_LOCKS, target])[0]["mine"]:
            return []
        query = "SELECT * FROM outbox" + (" WHERE target = %s" if target is not None else "") + " ORDER BY id"
        params: list = [target] if target is not None else []
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit)
        rows = self._rows(query, params)
        for row in rows:
            row["retain"] = bool(row["retain"])
        return rows

    def outbox_counts(self) -> dict[str, dict]:
        """Per target: how many rows wait (``n``), since when (``oldest``) and the head row's last error."""
        rows = self._rows("SELECT target, count(*) AS n, min(created_at) AS oldest, (SELECT last_error FROM outbox o "
                          "WHERE o.target = outbox.target ORDER BY id LIMIT 1) AS last_error FROM outbox "
                          "GROUP BY target ORDER BY target")
        return {row.pop("target"): row for row in rows}

    def outbox_sent(self, ids: list[int]) -> None:
        if ids:
            with self._tx("cannot update the outbox") as cur:
                cur.execute("DELETE FROM outbox WHERE id = ANY(%s::integer[])", [list(ids)])

    def outbox_failed(self, row_id: int, error: str, retry_in: float) -> None:
        with self._tx("cannot update the outbox") as cur:
            cur.execute("UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_try = %s WHERE id = %s",
                        [error, later(retry_in), row_id])

    def outbox_expire(self, older_than: float) -> list[dict]:
        """Drop messages written more than ``older_than`` seconds ago; per target how many went."""
        cutoff = later(-older_than)
        with self._tx("cannot expire outbox messages") as cur:
            cur.execute("SELECT target, count(*) AS n, min(created_at) AS oldest, string_agg(message, ' ' ORDER BY id) "
                        "AS messages FROM outbox WHERE created_at < %s GROUP BY target ORDER BY target", [cutoff])
            gone = cur.fetchall()
            if gone:
                cur.execute("DELETE FROM outbox WHERE created_at < %s", [cutoff])
        return gone

    def announced(self, target: str) -> set[str]:
        return {row["topic"] for row in self._rows("SELECT topic FROM announced WHERE target = %s", [target])}

    def announce(self, target: str, topics: set[str]) -> None:
        stamp = now()
        with self._tx("cannot record the announced topics") as cur:
            cur.execute("DELETE FROM announced WHERE target = %s", [target])
            cur.executemany("INSERT INTO announced (target, topic, created_at) VALUES (%s, %s, %s)",
                            [(target, topic, stamp) for topic in sorted(topics)])

    # ------------------------------------------------------------ the web page

    def browse(self, query: str, filters: Filters, limit: int = 20, offset: int = 0) -> list[dict]:
        """The web page's results (see ``pg_browse``): moments and recordings holding every word of
        ``query``, best first; with no query, the recordings newest first."""
        try:
            return pg_browse.browse(self._rows, self.names, query, filters, limit, offset)
        except psycopg.Error as exc:
            raise self._error(exc, f"search {query!r}") from exc

    def folders(self) -> list[str]:
        """Every folder that holds a recording, as this machine names it (the web page's folder filter)."""
        return [pg_browse.local_folder(self.names, row["folder"]) for row in
                self._rows("SELECT DISTINCT folder FROM jobs WHERE folder IS NOT NULL ORDER BY folder")]

    def thumbnails(self, description_ids: list[int]) -> dict[int, list[dict]]:
        """description id → its thumbnails in frame order: id, seq, seconds, path (None: in the database)."""
        out: dict = {d: [] for d in description_ids}
        if description_ids:
            for row in self._rows("SELECT id, description_id, seq, seconds, path FROM thumbnails WHERE "
                                  "description_id = ANY(%s::integer[]) ORDER BY description_id, seq",
                                  [list(description_ids)]):
                out[row["description_id"]].append(row)
        return out

    def thumbnail(self, thumbnail_id: int) -> bytes | None:
        if not 0 < thumbnail_id < 2**31:
            return None
        rows = self._rows("SELECT data FROM thumbnails WHERE id = %s", [thumbnail_id])
        return bytes(rows[0]["data"]) if rows and rows[0]["data"] is not None else None

    def forget(self, description_id: int) -> bool:
        """As ``SqliteStore.forget``: the description, its moments and thumbnails go; the job stays."""
        if not 0 < description_id < 2**31:
            return False
        with self._tx(f"cannot remove description {description_id}") as cur:
            cur.execute("SELECT job_id FROM descriptions WHERE id = %s FOR UPDATE", [description_id])
            row = cur.fetchone()
            if row is None:
                return False
            for table, key in (("events", "description_id"), ("thumbnails", "description_id"), ("descriptions", "id")):
                cur.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(key)),
                            [description_id])
            cur.execute("UPDATE jobs SET error = %s, updated_at = %s WHERE id = %s AND status = 'done' AND NOT EXISTS "
                        "(SELECT 1 FROM descriptions WHERE job_id = jobs.id)", [FORGOTTEN, now(), row["job_id"]])
        return True

    # ------------------------------------------------------------ workers

    def report(self, worker: str, state: str) -> bool:
        """``worker`` is alive and ``state`` (running, draining, stopped); returns whether it was asked
        to drain."""
        stamp = now()
        with self._tx("cannot report the worker") as cur:
            cur.execute("INSERT INTO workers (id, started_at, seen_at, state) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at, state = EXCLUDED.state "
                        "RETURNING drain", [worker, stamp, stamp, state])
            return bool(cur.fetchone()["drain"])

    def workers(self) -> list[dict]:
        """Every worker heard of, with the job it runs now (if any)."""
        rows = self._rows("SELECT w.id, w.started_at, w.seen_at, w.state, w.drain, j.id AS job_id, j.path, j.root, "
                          "j.relpath, j.started_at AS job_started FROM workers w LEFT JOIN jobs j ON j.worker = w.id "
                          "AND j.status = 'running' ORDER BY w.started_at, w.id")
        return [{"id": r["id"], "started_at": r["started_at"], "seen_at": r["seen_at"], "state": r["state"],
                 "drain": r["drain"], "job_id": r["job_id"], "job_started": r["job_started"],
                 "path": self.names.local(r["root"], r["relpath"], r["path"]) if r["path"] else None}
                for r in rows]

    def drain(self, target: str) -> list[str]:
        """Ask the worker ``target`` (an id, or a host name: every worker of that host) to finish its job
        and take no new one. Returns the ids asked."""
        with self._tx("cannot ask for a drain") as cur:
            cur.execute("UPDATE workers SET drain = true WHERE (id = %s OR left(id, %s) = %s) AND state <> 'stopped' "
                        "RETURNING id", [target, len(target) + 1, target + ":"])
            return sorted(r["id"] for r in cur.fetchall())

    # ------------------------------------------------------------ copying (migrate-db)

    def has_table(self, name: str) -> bool:
        return bool(self._rows("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                               "AND table_name = %s", [name]))

    def columns(self, table: str) -> list[tuple[str, str]]:
        """(name, kind) of the columns a copy writes — generated ones left out; kind: integer, real, text, blob."""
        kinds = {"integer": "integer", "bigint": "integer", "smallint": "integer", "boolean": "integer",
                 "double precision": "real", "real": "real", "numeric": "real", "bytea": "blob"}
        rows = self._rows("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                          "current_schema() AND table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position",
                          [table])
        columns = [(r["column_name"], kinds.get(r["data_type"], "text")) for r in rows]
        hidden = {("jobs", "relpath"), ("thumbnails", "path")}     # computed here / a file on SQLite
        return [c for c in columns if (table, c[0]) not in hidden]

    def rows(self, table: str, after: int = 0, limit: int | None = None) -> list[dict]:
        """Rows of ``table`` with an id above ``after``, by id (all, for a table without ids); a job's
        ``root`` as a folder (see ``JobStore``), not a name."""
        names = [c for c, _ in self.columns(table)]
        query = sql.SQL("SELECT {}" + (", relpath" if table == "jobs" else "") + " FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(table))
        if "id" in names:
            query += sql.SQL(" WHERE id > %s ORDER BY id LIMIT %s")
        rows = self._rows(query, [after, limit] if "id" in names else [])
        if table == "jobs":
            for row in rows:
                rel = row.pop("relpath")
                local = self.names.local(row["root"], rel, row["path"])
                row["root"] = folder_of(local, rel) if row["root"] else None
                row["path"] = local
        if table == "thumbnails":
            for row in rows:
                row["data"] = None if row["data"] is None else bytes(row["data"])
        return rows

    def load(self, table: str, columns: list[tuple[str, str]], rows: list[dict]) -> int:
        """Insert copied rows, ids kept; a table this database lacks (e.g. ``events``) is made first."""
        with self._tx(f"cannot copy {table}") as cur:
            if not self.has_table(table):
                cur.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(
                        "integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if name == "id"
                        else pg_schema.TYPES[kind])) for name, kind in columns)))
            names = [c for c, _ in columns]
            if table == "jobs":
                names = [*names, "relpath"]
                rows = [self._job_row(row) for row in rows]
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join(sql.Placeholder(n) for n in names))
            cur.executemany(insert, [{n: row.get(n) for n in names} for row in rows])
            if "id" in names:
                cur.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), coalesce(max(id), 0) + 1, false) "
                                    "FROM {}").format(sql.Literal(table), sql.Identifier(table)))
        return len(rows)

    def _job_row(self, row: dict) -> dict:
        """A copied job keyed here: its folder named (the configured name, else the folder's own)."""
        name, rel = self._place(row["path"], row.get("root"))
        return {**row, "root": name, "relpath": rel}


def _forget_kept(cur, job_id: int) -> None:
    cur.execute("DELETE FROM events WHERE job_id = %s AND description_id IS NULL", [job_id])


def _mark_done(cur, job_id: int, stamp: str) -> None:
    cur.execute("UPDATE jobs SET status = 'done', error = NULL, not_before = NULL, finished_at = %s, updated_at = %s "
                "WHERE id = %s", [stamp, stamp, job_id])


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
