"""The job store: a durable queue of recordings and their searchable descriptions.

``open_store`` picks the implementation from the target: a file path opens
SQLite (``sqlite.py``), the only kind today; a URL is for a server database
shared by several boards later. Callers use the ``JobStore`` protocol
(``base.py``) and never see SQL.
"""
from __future__ import annotations

import os
import re

from .base import (COLUMNS, END, MARK, SCHEMA_VERSION, Filters, Job, JobStore, Messages, MissingSidecar, Outgoing,
                   Status, StoreError, db_text, later, now, same_content, timings_text, valid_name)
from .dbfile import BUSY_LIMIT, BUSY_SLICE
from .fingerprints import BLOCK, PROBE, PROBES, fingerprint

__all__ = ["BUSY_LIMIT", "BUSY_SLICE", "COLUMNS", "SCHEMA_VERSION", "Job", "JobStore", "Messages", "MissingSidecar",
           "Outgoing", "Status", "StoreError", "db_text", "later", "now", "same_content", "timings_text",
           "valid_name", "BLOCK", "PROBE", "PROBES", "fingerprint", "open_store", "END", "MARK", "Filters"]


def open_store(target: str | os.PathLike, *, create: bool = True, readonly: bool = False,
               on_busy=None) -> JobStore:
    """Open the store at ``target`` (a database file path).

    ``create``: make the file (and its folder) if missing; otherwise a missing database is an error.
    ``readonly``: never write (the reading commands); works for a user who may only read the file, and
    does not bring an older schema up to date. ``on_busy(waited)``: called while the store waits for
    another process's lock, already while it opens (see ``JobStore.on_busy``; default: give up after
    ``BUSY_LIMIT`` seconds). Raises ``StoreError`` naming the target and the fix.
    """
    if isinstance(target, str) and re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", target):
        raise StoreError(f"{target}: only a database file path is supported (no URL schemes yet)")
    # Here, not at the top: sqlite-utils takes 0.1 s to import, which `rkvideo --help` must not pay.
    from .sqlite import SqliteStore
    return SqliteStore(target, create=create, readonly=readonly, on_busy=on_busy)
