"""The SQLite schema as named steps (sqlite-utils ``Migrations``), applied in order at open.

Why named steps: a database made by an older rkvideo must open unchanged and
then gain what newer code needs, and each step must run exactly once, even
when two processes open a new database at the same moment. sqlite-utils
records every applied step by name in ``_sqlite_migrations``; ``SqliteStore``
applies the pending ones in one ``BEGIN IMMEDIATE`` transaction, so another
process sees the schema before them or after them, never half-way.

The first step creates the schema rkvideo made before it had migrations
(``schema_version`` 1) and does nothing to a database that already has it: a
database made by that code records the step as applied and then gets the
later steps.

``schema_version`` stays: it is what every rkvideo, old or new, checks before
it touches a database, and refuses one with a higher number. So it means *the
oldest rkvideo that can still read and write this database safely*, not the
number of steps. A step bumps it only when older code would damage or
misread the data. The step that adds ``root``/``relpath``/``worker`` does not
bump it: older rkvideo ignores the new columns (it names its columns on
INSERT), ``relpath`` is computed by SQLite from ``path`` and ``root`` so no
writer can make it disagree, and a job written by older code simply has no
root. That keeps a downgrade possible.
"""
from __future__ import annotations

import sqlite3

from sqlite_utils.migrations import Migrations

from .base import SCHEMA_VERSION

MIGRATIONS = Migrations("rkvideo")

# The first schema, as sqlite-utils column specs. Times are ISO 8601 UTC text, JSON columns are
# UTF-8 JSON text. Documented in the README.
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
# Every table rkvideo makes: a database with other tables and no schema_version is someone else's.
TABLES = {"jobs", "descriptions", "events", "thumbnails", "schema_version", "missing_sidecars",
          Migrations.migrations_table, "outbox", "announced", "workers"}
# Timeline moments. start_s/end_s: seconds from the recording's start ("end" is an SQL keyword).
# description_id is NULL while the recording's timeline is still being described (a finished
# segment kept for a resume after a crash); job_id says whose it is.
EVENTS = {
    "id": int, "job_id": int, "description_id": int, "start_s": float, "end_s": float, "text": str,
    "frames": str, "score": float, "created_at": str,
}


@MIGRATIONS(name="0001-jobs-descriptions-fts")
def jobs_descriptions_fts(db) -> None:
    """Today's schema (version 1). Every statement is skipped where its object exists already."""
    db["jobs"].create(JOBS, pk="id", not_null={"path", "status", "attempts"}, defaults={"attempts": 0},
                      if_not_exists=True)
    db["jobs"].create_index(["path"], unique=True, if_not_exists=True)
    db["jobs"].create_index(["status", "id"], if_not_exists=True)
    db["jobs"].create_index(["hash"], if_not_exists=True)
    db["descriptions"].create(DESCRIPTIONS, pk="id", foreign_keys=[("job_id", "jobs", "id")],
                              not_null={"job_id"}, if_not_exists=True)
    db["descriptions"].create_index(["job_id"], if_not_exists=True)
    if not db["descriptions"].detect_fts():
        db["descriptions"].enable_fts(["text"], fts_version="FTS5", create_triggers=True)
    db["schema_version"].create({"version": int}, if_not_exists=True)
    db.execute("INSERT INTO schema_version (version) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM schema_version)",
               [SCHEMA_VERSION])


@MIGRATIONS(name="0002-job-root-relpath-worker")
def job_root_relpath_worker(db) -> None:
    """Where a job came from and who took it: ``root`` (the watched folder), ``relpath`` (the path below
    it, computed from ``path`` and ``root``; NULL when the path is not under the root) and ``worker``
    (the id of the worker that last claimed it). A VIRTUAL generated column needs SQLite 3.31 (2020)."""
    db.execute("ALTER TABLE jobs ADD COLUMN root TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN relpath TEXT GENERATED ALWAYS AS ("
               "CASE WHEN substr(path, 1, length(root) + 1) = root || '/' "
               "THEN substr(path, length(root) + 2) END) VIRTUAL")
    db.execute("ALTER TABLE jobs ADD COLUMN worker TEXT")


@MIGRATIONS(name="0003-i11-events")
def events(db) -> None:
    """Moments of a recording (timeline mode), searchable like descriptions."""
    db["events"].create(EVENTS, pk="id", foreign_keys=[("job_id", "jobs", "id"),
                                                      ("description_id", "descriptions", "id")],
                        not_null={"job_id", "start_s", "end_s"}, if_not_exists=True)
    db["events"].create_index(["job_id"], if_not_exists=True)
    db["events"].create_index(["description_id"], if_not_exists=True)
    if not db["events"].detect_fts():
        db["events"].enable_fts(["text"], fts_version="FTS5", create_triggers=True)


@MIGRATIONS(name="0100-i9-missing-sidecars")
def missing_sidecars(db) -> None:
    """Sidecars that could not be written, one row per job and kind, with the text to write and the last
    error, so that a later scan or `rkvideo retry --sidecars` writes them (issue 9). A row goes once its
    file is written, when the job is described again, or with its job. A new table: older rkvideo
    ignores it, so ``schema_version`` stays."""
    db.execute("CREATE TABLE IF NOT EXISTS missing_sidecars ("
               "job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, kind TEXT NOT NULL, "
               "path TEXT NOT NULL, recording TEXT NOT NULL, text TEXT NOT NULL, error TEXT NOT NULL, "
               "failed_at TEXT NOT NULL, PRIMARY KEY (job_id, kind))")


@MIGRATIONS(name="0101-i9-descriptions-trigram")
def descriptions_trigram(db) -> None:
    """A trigram index over ``descriptions.text`` (``descriptions_fts_trigram``), kept up to date by
    triggers and built here from the rows already stored: it lets search find a word inside a run of
    Chinese, Japanese or Thai text, which the unicode61 index keeps as one word (store/search.py).
    The unicode61 index and its ranking stay as they are. SQLite before 3.34 has no trigram
    tokenizer: then nothing is made, and such searches scan the text."""
    table = "descriptions_fts_trigram"
    try:
        db.execute(f"CREATE VIRTUAL TABLE {table} USING fts5(text, content='descriptions', content_rowid='id', "
                   f"tokenize='trigram')")
    except sqlite3.OperationalError as exc:
        if "tokenizer" in str(exc):
            return
        raise
    db.execute(f"CREATE TRIGGER {table}_ai AFTER INSERT ON descriptions BEGIN "
               f"INSERT INTO {table} (rowid, text) VALUES (new.id, new.text); END")
    db.execute(f"CREATE TRIGGER {table}_ad AFTER DELETE ON descriptions BEGIN "
               f"INSERT INTO {table} ({table}, rowid, text) VALUES ('delete', old.id, old.text); END")
    db.execute(f"CREATE TRIGGER {table}_au AFTER UPDATE ON descriptions BEGIN "
               f"INSERT INTO {table} ({table}, rowid, text) VALUES ('delete', old.id, old.text); "
               f"INSERT INTO {table} (rowid, text) VALUES (new.id, new.text); END")
    db.execute(f"INSERT INTO {table} ({table}) VALUES ('rebuild')")


# The folder a recording is in (its path up to the last "/"), as SQL over jobs.path: the web page's
# folder filter. An index on this very expression (below) makes the filter and the list of folders cheap.
FOLDER_SQL = "substr(path, 1, length(rtrim(path, replace(path, '/', ''))) - 1)"


@MIGRATIONS(name="0200-i12-thumbnails")
def thumbnails(db) -> None:
    """Small JPEGs of the frames the model saw, one row per frame of a description: ``seq`` is the
    frame's position in ``descriptions.frames``, ``seconds`` its time, ``path`` the file below the
    thumbnails folder beside the database (``store.thumbnails``). Rows go with their description."""
    db.execute("CREATE TABLE IF NOT EXISTS thumbnails ("
               "id INTEGER PRIMARY KEY, "
               "description_id INTEGER NOT NULL REFERENCES descriptions(id) ON DELETE CASCADE, "
               "seq INTEGER NOT NULL, seconds FLOAT, path TEXT NOT NULL, created_at TEXT)")
    db.execute("CREATE INDEX IF NOT EXISTS thumbnails_description_id ON thumbnails (description_id, seq)")


@MIGRATIONS(name="0201-i12-browse-indexes")
def browse_indexes(db) -> None:
    """What the web page sorts and filters by: a recording's time (``mtime``) and folder, and the moments
    of a set of jobs."""
    db.execute("CREATE INDEX IF NOT EXISTS jobs_mtime ON jobs (mtime)")
    db.execute(f"CREATE INDEX IF NOT EXISTS jobs_folder ON jobs ({FOLDER_SQL})")
    # A folder's or a day's moments, by job, without reading the rows (the search's filters).
    db.execute("CREATE INDEX IF NOT EXISTS events_job_description ON events (job_id, description_id)")


# Notifications waiting for delivery, one row per message and target, delivered in id order per
# target and deleted once delivered (see store.Outgoing). ``message`` is the message's stable id;
# ``next_try``/``last_error``/``attempts`` say how delivery is going. No foreign key to jobs: a job
# can be forgotten (its file deleted) while its error message still waits.
OUTBOX = {
    "id": int, "message": str, "target": str, "topic": str, "payload": str, "retain": int, "job_id": int,
    "created_at": str, "attempts": int, "next_try": str, "last_error": str,
}


@MIGRATIONS(name="0300-i14-outbox")
def outbox(db) -> None:
    """The notification outbox, and the retained MQTT discovery topics each target was given (so a
    folder no longer watched gets its Home Assistant entities removed)."""
    db["outbox"].create(OUTBOX, pk="id", not_null={"message", "target", "payload", "created_at", "attempts"},
                        defaults={"attempts": 0, "retain": 0}, if_not_exists=True)
    db["outbox"].create_index(["target", "id"], if_not_exists=True)
    db["outbox"].create_index(["created_at"], if_not_exists=True)
    db["announced"].create({"target": str, "topic": str, "created_at": str}, pk=("target", "topic"),
                           not_null={"created_at"}, if_not_exists=True)

@MIGRATIONS(name="0400-i13-workers")
def workers(db) -> None:
    """One row per daemon process (``rkvideo workers``): when it last reported, its state, and whether it
    was asked to drain. Older rkvideo ignores the table, so ``schema_version`` stays."""
    db.execute("CREATE TABLE IF NOT EXISTS workers (id TEXT PRIMARY KEY, started_at TEXT, seen_at TEXT, state TEXT, "
               "drain INTEGER NOT NULL DEFAULT 0)")


def version(db) -> int | None:
    """The schema_version of the database, or None when it has none (new, or not rkvideo's)."""
    if not db["schema_version"].exists():
        return None
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] if row and row[0] is not None else None


def foreign_tables(db) -> set:
    """Tables rkvideo does not make (FTS5's shadow tables are its own)."""
    return {name for name in db.table_names()
            if name not in TABLES and not name.startswith(("descriptions_fts", "events_fts"))}


def pending(db) -> list:
    """The names of the steps this database still needs (a read: it writes nothing)."""
    return [m.name for m in MIGRATIONS.pending(db)]


def migrate(db) -> None:
    """Apply the pending steps; the caller holds the write transaction."""
    MIGRATIONS.apply(db)
