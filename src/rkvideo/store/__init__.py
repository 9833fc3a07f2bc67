"""The job store: a durable queue of recordings and their searchable descriptions.

``open_store`` picks the implementation from the target: a file path opens
SQLite (``sqlite.py``, one board); a ``postgresql://`` URL opens PostgreSQL
(``postgres.py``, any number of boards sharing one queue; needs the
``[postgres]`` extra). Callers use the ``JobStore`` protocol (``base.py``)
and never see SQL. ``copy.py`` moves a database from one to the other.
"""
from __future__ import annotations

import os

from ..config import is_url
from .base import (COLUMNS, END, MARK, REPORT_SECONDS, SCHEMA_VERSION, STALE_SECONDS, Filters, Job, JobStore,
                   LostClaim, Messages, MissingSidecar, Outgoing, Status, StoreError, StoreUnavailable, db_text,
                   later, now, same_content, timings_text, valid_name)
from .dbfile import BUSY_LIMIT, BUSY_SLICE
from .fingerprints import BLOCK, PROBE, PROBES, fingerprint
from .search import words as search_words

__all__ = ["BUSY_LIMIT", "BUSY_SLICE", "COLUMNS", "REPORT_SECONDS", "SCHEMA_VERSION", "STALE_SECONDS", "Job",
           "JobStore", "LostClaim", "Messages", "MissingSidecar", "Outgoing", "Status", "StoreError",
           "StoreUnavailable", "db_text", "later", "now", "same_content", "timings_text", "valid_name", "BLOCK",
           "PROBE", "PROBES", "fingerprint", "open_store", "END", "MARK", "Filters", "search_words"]

SCHEMES = ("postgresql", "postgres")


def open_store(target: str | os.PathLike, *, create: bool = True, readonly: bool = False,
               on_busy=None, roots: dict | None = None) -> JobStore:
    """Open the store at ``target``: a database file path, or a ``postgresql://`` URL.

    ``create``: make the database (file and folder, or the schema) if missing; otherwise a missing one is
    an error. ``readonly``: never write (the reading commands); works for a user who may only read the
    file, and does not bring an older schema up to date. ``on_busy(waited)``: called while an SQLite
    store waits for another process's lock, already while it opens (see ``JobStore.on_busy``; default:
    give up after ``BUSY_LIMIT`` seconds). ``roots``: the watched folders by name (name -> folder),
    which a shared database keys its jobs by. Raises ``StoreError`` naming the target and the fix.
    """
    if isinstance(target, str) and is_url(target):
        scheme = target.split(":", 1)[0].lower()
        if scheme not in SCHEMES:
            raise StoreError(f"{target}: unknown database URL scheme {scheme!r} (give a file path or a "
                             f"postgresql:// URL)")
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(f"{target}: PostgreSQL needs psycopg ({exc}): pip install 'rkvideo[postgres]'") from None
        return PostgresStore(target, create=create, readonly=readonly, roots=roots, on_busy=on_busy)
    # Here, not at the top: sqlite-utils takes 0.1 s to import, which `rkvideo --help` must not pay.
    from .sqlite import SqliteStore
    return SqliteStore(target, create=create, readonly=readonly, on_busy=on_busy, roots=roots)
