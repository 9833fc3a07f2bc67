"""``rkvideo migrate-db SRC DEST``: move a database from SQLite to PostgreSQL (or back).

Why here and not a script: moving the one board's SQLite file into the shared
database is the first step of every multi-board setup, and it must not copy
a database that a daemon is still writing. The source is locked like a
daemon locks it (SQLite), or checked for daemons that still report
(PostgreSQL); the destination must be empty. Folder names for a shared
database come from ``[watch] roots``, else each folder's own name.
"""
from __future__ import annotations

import click

from .. import errors, store
from ..store.copy import copy_all
from .workers import shown
from .common import CONTEXT, config_option, roots, target

EPILOG = """\b
Examples:
  rkvideo migrate-db ~/.local/share/rkvideo/rkvideo.db postgresql://rkvideo@nas/rkvideo
  rkvideo migrate-db postgresql://rkvideo@nas/rkvideo backup.db     and back, e.g. for a copy"""


@click.command("migrate-db", context_settings=CONTEXT, epilog=EPILOG,
               short_help="copy a database (SQLite <-> PostgreSQL)")
@click.argument("src", metavar="SRC")
@click.argument("dest", metavar="DEST")
@config_option
def command(src, dest, config):
    """Copy every job, description (and timeline event, where the table exists) from the database SRC to
    DEST, keeping their ids: a file path or a postgresql:// URL each. DEST is created if missing and must
    hold no job yet. Stop the daemons that use SRC first."""
    named = roots(config)
    try:
        source = store.open_store(target(src), create=False, roots=named)
    except store.StoreError as exc:
        raise errors.UsageError(str(exc)) from None
    try:
        check_idle(source)
        with store.open_store(target(dest), roots=named) as destination:
            destination.lock_daemon()
            copied = copy_all(source, destination)
    finally:
        source.close()
    print(f"copied {', '.join(f'{n} {table}' for table, n in copied.items())} from {source.location} to "
          f"{destination.location}")


def check_idle(source) -> None:
    """No daemon may write SRC while it is copied: an SQLite file is locked as a daemon locks it; on a
    shared database, a worker that still reports is refused."""
    source.lock_daemon()
    live = [w["id"] for w in map(shown, source.workers()) if w["state"] not in ("stopped", "gone")]
    if live:
        raise errors.UsageError(f"{source.location}: daemons still use it ({', '.join(live)}); stop them first "
                                f"(`rkvideo workers --drain HOST`)")
