"""``rkvideo list``, ``show``, ``search`` and ``retry``: read and steer the database the daemon fills.

Why these open the database read-only (``retry`` excepted) and never create
it: they run beside a live ``rkvideo watch`` (WAL lets them), and a typo in
``--db`` must say "not found" instead of leaving an empty database behind.
"""
from __future__ import annotations

import os
import sys

import click

from .. import daemon, errors, store
from ..output import terminal
from .common import (SQLITE_MAX_INT, CONTEXT, config_option, database, db_option, error, json_option, plural,
                     print_json, roots, stage_messages)

LIST_EPILOG = """\b
Examples:
  rkvideo list                                 every recording
  rkvideo list --status failed                 what went wrong, with the reason
  rkvideo list --json | jq '.[] | select(.status == "done") | .path'"""

SHOW_EPILOG = """\b
Examples:
  rkvideo show /srv/cameras/door/2024-05-01_0800.mp4
  rkvideo show 42
  rkvideo show 42 --json | jq -r '.descriptions[-1].text'"""

SEARCH_EPILOG = """\b
Examples:
  rkvideo search "red car"
  rkvideo search delivery --limit 5 --json      moments have "kind": "moment", "start" and "end"
  rkvideo search 'dog OR cat' --raw             SQLite: FTS5 syntax (OR, NOT, "phrase", prefix*);
                                               PostgreSQL: web-search syntax (or, -word, "phrase")"""

RETRY_EPILOG = """\b
Examples:
  rkvideo retry                                every failed job
  rkvideo retry --failed --skipped             failed jobs and skipped duplicates/bad files
  rkvideo retry 42 /srv/cameras/door/a.mp4     these recordings, whatever their status
  rkvideo retry --sidecars                     write the sidecars that could not be written"""


def open_db(db: str | None, config: str | None, *, readonly: bool = True):
    """The existing database named by ``--db`` or the config (with the config's ``[watch] roots``, so a
    shared database shows this machine's paths); one that cannot be opened is a usage error (status 2),
    as a wrong ``--db`` is the usual cause. A database locked by another process or on a full disk stays
    a runtime failure (status 1): it can pass."""
    try:
        with stage_messages():          # "locked by another process; waiting for it" while it waits
            return store.open_store(database(db, config), create=False, readonly=readonly, roots=roots(config))
    except store.StoreUnavailable:
        raise
    except store.StoreError as exc:
        raise errors.UsageError(str(exc)) from None


def find(jobs, target: str) -> store.Job | None:
    """A job by id (digits that are not a file name) or by the recording's path (as given or resolved)."""
    if target.isdigit() and not os.path.exists(target):
        number = int(target)
        return jobs.job(number) if number <= SQLITE_MAX_INT else None
    for candidate in (os.path.abspath(target), os.path.realpath(target)):
        job = jobs.job_at(candidate)
        if job:
            return job
    return None


def not_found(target: str, jobs) -> errors.UsageError:
    return errors.UsageError(f"{target}: not in the database {jobs.location} (see `rkvideo list`)")


def dump(data) -> None:
    print_json(data, indent=1)


@click.command("list", context_settings=CONTEXT, epilog=LIST_EPILOG,
               short_help="list recordings in the database and their status")
@click.option("--status", type=click.Choice([s.value for s in store.Status]), metavar="STATUS",
              help=f"only jobs with this status ({', '.join(s.value for s in store.Status)})")
@json_option("a JSON array")
@db_option()
@config_option
def list_command(status, as_json, db, config):
    """List the jobs of the database: one per recording, with its status (queued, running, done, failed,
    skipped), attempts and last error or duplicate."""
    jobs = open_db(db, config)
    try:
        rows = [job.as_dict() for job in jobs.jobs(store.Status(status) if status else None)]
    finally:
        jobs.close()
    if as_json:
        dump(rows)
        return
    if rows:
        print(terminal.jobs(rows))
    print(terminal.jobs_summary(rows, [s.value for s in store.Status]), file=sys.stderr)


@click.command("show", context_settings=CONTEXT, epilog=SHOW_EPILOG,
               short_help="show one recording's job and descriptions")
@click.argument("target", metavar="PATH|ID")
@json_option("one JSON object")
@db_option()
@config_option
def show_command(target, as_json, db, config):
    """Show the job of one recording (by PATH or job ID, from list or search) and every description
    stored for it, newest last: text, model, prompt, frames used, token counts and timings, and the
    timeline of moments when it has one."""
    jobs = open_db(db, config)
    try:
        job = find(jobs, target)
        if job is None:
            raise not_found(target, jobs)
        descriptions = [{**d, "events": jobs.events(d["id"])} for d in jobs.descriptions(job.id)]
        data = {**job.as_dict(), "descriptions": descriptions}
    finally:
        jobs.close()
    if as_json:
        dump(data)
    else:
        print(terminal.job(data))


@click.command("search", context_settings=CONTEXT, epilog=SEARCH_EPILOG,
               short_help="full-text search over the descriptions and their moments")
@click.argument("query", metavar="QUERY")
@click.option("--limit", type=int, default=20, metavar="N", help="at most N results (default 20)")
@click.option("--raw", is_flag=True, help="pass QUERY unquoted: FTS5 syntax on SQLite, web-search syntax on "
                                          "PostgreSQL (operators allowed)")
@json_option("a JSON array")
@db_option()
@config_option
def search_command(query, limit, raw, as_json, db, config):
    """Search every stored description and every moment of a timeline (SQLite FTS5 or PostgreSQL text
    search, best match first). Each word of QUERY must appear; in descriptions, a word in Chinese,
    Japanese, Thai (scripts without spaces) is found inside longer runs of text. A moment is shown with
    its times (door.mp4 01:15–01:40), matches in [brackets] in a snippet. Exit status 1 when nothing
    matches."""
    if limit < 1:
        raise errors.UsageError(f"--limit must be at least 1, got {limit}")
    if not raw and not store.search_words(query):
        raise errors.UsageError(f"search {query!r}: no word to search for (give at least one word of letters or "
                                f"digits)")
    jobs = open_db(db, config)
    try:
        limit = min(limit, SQLITE_MAX_INT)      # a huge limit means "all"
        hits = ranked(jobs.search(query, limit, raw=raw), jobs.search_events(query, limit, raw=raw), limit)
    except store.StoreError as exc:     # e.g. FTS5 syntax in a --raw query
        raise errors.UsageError(str(exc)) from None
    finally:
        jobs.close()
    if as_json:
        dump(hits)
        return None
    if hits:
        print(terminal.hits(hits))
        return None
    print(f"no description or moment matches {query!r}", file=sys.stderr)
    return errors.EXIT_RUNTIME


def ranked(descriptions: list, moments: list, limit: int) -> list:
    """Descriptions and moments in one list, best match first (both are FTS5 bm25 ranks), each with
    ``kind`` "description" or "moment"; at most ``limit``."""
    hits = [{**d, "kind": "description"} for d in descriptions] + [{**m, "kind": "moment"} for m in moments]
    return sorted(hits, key=lambda hit: hit["rank"])[:limit]


@click.command("retry", context_settings=CONTEXT, epilog=RETRY_EPILOG,
               short_help="queue failed (or chosen) recordings again")
@click.argument("targets", nargs=-1, metavar="[PATH|ID]...")
@click.option("--failed", is_flag=True, help="every failed job (the default with no PATH|ID)")
@click.option("--skipped", is_flag=True, help="every skipped job")
@click.option("--sidecars", is_flag=True,
              help="instead: write the sidecars of described recordings that could not be written (a full disk, "
                   "a folder in the way), now, from the stored text (of PATH|ID... only, if given)")
@db_option()
@config_option
def retry_command(targets, failed, skipped, sidecars, db, config):
    """Put jobs back in the queue with fresh attempts; a running `rkvideo watch` picks them up within a
    second. With no arguments every failed job is retried. Naming a done recording describes it again
    (e.g. after changing the model or prompt): a new description is added, the old one kept. With
    --sidecars, write the missing sidecars instead (exit status 1 if some still cannot be written)."""
    jobs = open_db(db, config, readonly=False)
    try:
        ids = []
        for target in targets:
            job = find(jobs, target)
            if job is None:
                raise not_found(target, jobs)
            ids.append(job.id)
        statuses = tuple(s for s, on in ((store.Status.FAILED, failed), (store.Status.SKIPPED, skipped)) if on)
        if statuses and (ids or sidecars):
            raise errors.UsageError("give PATH|ID or --failed/--skipped, not both; --sidecars goes with PATH|ID only")
        if sidecars:
            return write_sidecars(jobs, ids)
        count = jobs.retry(ids or None, statuses or (store.Status.FAILED,))
    finally:
        jobs.close()
    print(f"{plural(count, 'job')} queued again")
    return None


def write_sidecars(jobs, ids: list) -> int | None:
    """``retry --sidecars``: each sidecar still missing is one error line; status 1 if any is."""
    written, failed = daemon.rewrite_sidecars(jobs, ids or None)
    for missing, reason in failed:
        error(f"{missing.path}: {missing.kind} sidecar of {missing.recording} still not written: {reason}")
    print(f"{plural(len(written), 'sidecar')} written")
    return errors.EXIT_RUNTIME if failed else None


COMMANDS = (list_command, show_command, search_command, retry_command)
