"""``rkvideo forget``: remove descriptions, with their moments and thumbnails.

Why a command of its own: a description (and the frames kept of it) may be
wrong, private or simply old; removing it must also remove the thumbnail
files beside the database, which a hand-written SQL ``DELETE`` would leave
behind. The recording's job stays, so the daemon does not describe the file
again by itself; ``rkvideo retry`` does when asked.
"""
from __future__ import annotations

import click

from .. import errors
from .common import CONTEXT, config_option, db_option, plural
from .jobs import open_db

EPILOG = """\b
Examples:
  rkvideo forget 12                              description 12 (see rkvideo show / search)
  rkvideo forget 12 13 --db /var/lib/rkvideo/rkvideo.db"""


@click.command("forget", context_settings=CONTEXT, epilog=EPILOG,
               short_help="remove descriptions with their moments and thumbnails")
@click.argument("ids", nargs=-1, required=True, type=int, metavar="DESCRIPTION_ID...")
@db_option()
@config_option
def command(ids, db, config):
    """Remove the descriptions with these ids (as `rkvideo show` and `rkvideo search` print them) from the
    database, with their moments and the thumbnail files of their frames. The recordings' jobs stay;
    `rkvideo retry PATH` describes a recording again."""
    jobs = open_db(db, config, readonly=False)
    try:
        unknown = [i for i in ids if not jobs.forget(i)]
    finally:
        jobs.close()
    removed = len(ids) - len(unknown)
    click.echo(f"{plural(removed, 'description')} removed", err=True)
    if unknown:
        raise errors.UsageError(f"no description {', '.join(map(str, unknown))} in the database (see `rkvideo show`)")
