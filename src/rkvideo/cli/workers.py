"""``rkvideo workers``: which daemon runs what, when each last reported, and draining one.

Why a command of its own: with several boards on one database the question
"who is describing what, and is board 3 still alive?" has no answer in
``rkvideo list``. A daemon reports every few seconds (``store.REPORT_SECONDS``);
one silent for ``store.STALE_SECONDS`` while not stopped is shown as gone (its
job is given back by the other daemons as soon as its database session ends,
whatever this shows). ``--drain`` writes the request into the database, so it
works from any machine; the daemon finishes its job and exits with status 0.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime

import click

from .. import errors, store
from ..output import terminal
from .common import CONTEXT, config_option, db_option, json_option, plural
from .jobs import open_db

EPILOG = """\b
Examples:
  rkvideo workers                              every daemon on the database, and its job
  rkvideo workers --db postgresql://rkvideo@nas/rkvideo --json
  rkvideo workers --drain pi5-garage           finish the current job, take no new one, exit
  rkvideo workers --drain pi5-garage:812:3fa2c1    one daemon, by its worker id"""


@click.command("workers", context_settings=CONTEXT, epilog=EPILOG,
               short_help="show the daemons sharing the database; drain one")
@click.option("--drain", metavar="ID|HOST", help="ask that worker (or every worker of that host) to finish its "
                                                  "current job, take no new one and exit")
@json_option("a JSON array")
@db_option()
@config_option
def command(drain, as_json, db, config):
    """Show every daemon (worker) that uses the database: its state (starting, running, draining,
    stopped, gone), when it last reported, and the job it is describing. Worker ids are host:pid:random,
    one per daemon process."""
    jobs = open_db(db, config, readonly=not drain)
    try:
        if drain:
            return ask_to_drain(jobs, drain)
        rows = [shown(w) for w in jobs.workers()]
    finally:
        jobs.close()
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    elif rows:
        print(terminal.workers(rows))
    else:
        print(f"no daemon has used {jobs.location} yet", file=sys.stderr)
    return None


def ask_to_drain(jobs, target: str) -> int | None:
    asked = jobs.drain(target)
    if not asked:
        raise errors.UsageError(f"{target}: no running worker with that id or host on {jobs.location} "
                                f"(see `rkvideo workers`)")
    print(f"asked {plural(len(asked), 'worker')} to drain: {', '.join(asked)}")
    return None


def shown(worker: dict) -> dict:
    """A worker as shown: its state (gone when silent too long, draining when asked), seconds since its
    last report and since its job started."""
    now = datetime.fromisoformat(store.now())
    reported = (now - datetime.fromisoformat(worker["seen_at"])).total_seconds()
    state = worker["state"]
    if state != "stopped" and reported > store.STALE_SECONDS:
        state = "gone"
    elif worker["drain"] and state != "stopped":
        state = "draining"
    running = (now - datetime.fromisoformat(worker["job_started"])).total_seconds() if worker["job_id"] else None
    return {"id": worker["id"], "state": state, "reported": round(reported, 1), "job_id": worker["job_id"],
            "path": worker["path"], "running": None if running is None else round(running, 1),
            "started_at": worker["started_at"], "seen_at": worker["seen_at"]}
