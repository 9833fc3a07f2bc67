"""``rkvideo migrate-db``: copy a whole database from one store into an empty other one.

Why table by table through the ``JobStore`` copying methods, not a dump: the
two backends store a job's folder differently (SQLite: the folder's path;
PostgreSQL: its name, which several boards share), and each store converts
its own rows (``rows``/``load``), and thumbnails are files beside an SQLite
database but rows in PostgreSQL (each store reads and writes its own kind;
between them a thumbnail is its JPEG bytes). Ids are kept, so descriptions,
moments and thumbnails still point at their jobs. What waits to be done goes
along: sidecars not written yet, notifications not delivered yet. Rows go
over in batches, so a large archive never sits in memory whole.
"""
from __future__ import annotations

from .base import JobStore, StoreError

# In this order: later tables point at earlier ones. A table the source lacks (an older database) is left out.
TABLES = ("jobs", "descriptions", "events", "thumbnails", "missing_sidecars", "outbox", "announced")
BATCH = 2000


def copy_all(source: JobStore, dest: JobStore) -> dict[str, int]:
    """Copy every table of ``TABLES`` that ``source`` has into ``dest``, which must hold no job yet.
    Returns rows copied per table."""
    jobs = sum(dest.counts().values())
    if jobs:
        raise StoreError(f"{dest.location}: already holds {jobs} jobs; migrate-db copies into an empty "
                         f"database only")
    copied = {}
    for table in TABLES:
        if source.has_table(table):
            copied[table] = copy_table(source, dest, table)
    return copied


def copy_table(source: JobStore, dest: JobStore, table: str) -> int:
    columns = source.columns(table)
    if dest.has_table(table):       # columns both have (the newer side's extra ones keep their defaults)
        have = {name for name, _ in dest.columns(table)}
        columns = [c for c in columns if c[0] in have]
    if not any(name == "id" for name, _ in columns):
        return dest.load(table, columns, source.rows(table))
    total, after = 0, 0
    while True:
        rows = source.rows(table, after=after, limit=BATCH)
        if not rows:
            return total
        total += dest.load(table, columns, rows)
        after = rows[-1]["id"]
