"""``rkvideo watch``: check the folders and settings, then run the daemon in the foreground.

Why the checks live here and not in the daemon: what is wrong as given (a
file instead of a folder, two folders whose sidecars would collide) must stop
with status 2, which systemd does not restart; a folder that is not there yet
(a network share or USB disk mounted late) is a runtime condition, status 1,
so that systemd tries again. The daemon itself gets folders that exist.
"""
from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import click

from .. import daemon, errors
from .common import CONTEXT, config_option, db_option, load_config

EPILOG = """\b
Examples:
  rkvideo watch /srv/cameras                          run until stopped (Ctrl-C or SIGTERM)
  rkvideo watch /srv/cameras/door /srv/cameras/yard --db /var/lib/rkvideo/rkvideo.db
  rkvideo watch /srv/cameras --once                   describe the backlog, then exit (cron)

\b
Then: rkvideo list, rkvideo search "red car", rkvideo show PATH, rkvideo retry.
Settings: [watch] patterns, recursive, settle_seconds, max_attempts, retry_backoff, db,
follow_symlinks; [notify] mqtt, webhooks (messages for Home Assistant and others; see rkvideo outbox);
[output] sidecars, dir. Exit status: 0 stopped cleanly, 1 runtime failure (also a folder that is not
there yet, or a database deleted under the daemon: systemd starts it again), 2 bad usage or
configuration."""


@click.command("watch", context_settings=CONTEXT, epilog=EPILOG,
               short_help="describe every new recording in folders (daemon)")
@click.argument("folders", nargs=-1, required=True, metavar="DIR...")
@db_option()
@click.option("--once", is_flag=True, help="describe what is there now, then exit")
@click.option("--verbose", "-v", is_flag=True, help="log every file event and queue decision")
@config_option
def command(folders, db, once, verbose, config):
    """Follow folders where cameras, NVRs or dashcams drop recordings and describe each new recording
    exactly once, storing the text in a searchable database (and sidecar files if output.sidecars is
    set). On start the folders are scanned for recordings that arrived while the daemon was down; then
    new and moved-in files are followed. A file is described once it has stopped growing for
    watch.settle_seconds. The model is loaded once. Runs in the foreground; under systemd it reports
    READY=1 and watchdog pings (see systemd/rkvideo.service)."""
    cfg = load_config(config)
    roots = [folder_root(folder) for folder in folders]
    check_sidecar_folders(cfg, roots)
    database = Path(db).expanduser() if db else cfg.database_path()
    setup_logging(verbose)
    # A database that cannot be opened, or that another daemon uses, raises StoreError: status 1.
    return OUTCOME_STATUS[daemon.watch(cfg, roots, database, once=once, on_second_signal=exit_at_once)]


# How the daemon ended, as the status systemd acts on (RestartPreventExitStatus=2: no restart).
OUTCOME_STATUS = {daemon.Outcome.STOPPED: errors.EXIT_OK, daemon.Outcome.RUNTIME_FAILURE: errors.EXIT_RUNTIME,
                  daemon.Outcome.CONFIGURATION_ERROR: errors.EXIT_USAGE}


def exit_at_once(signum: int) -> None:
    """A second SIGINT/SIGTERM: leave now, without waiting for the runtime, with status 128 + signal."""
    os._exit(128 + signum)


def folder_root(folder: str) -> Path:
    """The resolved folder; a missing one is a runtime failure (mounted late), a file a usage error."""
    path = Path(folder).expanduser()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise errors.RuntimeFailure(f"{folder}: folder not found (not mounted yet? the service tries again every "
                                    f"RestartSec; RequiresMountsFor= in the unit waits for the mount)") from None
    except OSError as exc:
        raise errors.RuntimeFailure(f"{folder}: cannot reach the folder: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise errors.UsageError(f"{folder}: not a folder (give the folder the recordings are written to)")
    return path.resolve()


def check_sidecar_folders(cfg, roots: list) -> None:
    """Under output.dir, sidecars are nested by the watched folder's name: two folders with one name
    would write into the same place."""
    if not (cfg.output.sidecars and cfg.output.dir):
        return
    seen: dict = {}
    for root in roots:
        other = seen.setdefault(root.name, root)
        if other != root:
            out = cfg.resolve_path(cfg.output.dir) / root.name
            raise errors.UsageError(f"{other} and {root}: the sidecars of both would go to {out} (output.dir "
                                    f"nests them by folder name; watch folders with different names, or leave "
                                    f"output.dir unset)")


def setup_logging(verbose: bool) -> None:
    # journald stamps each line itself; a terminal or a log file needs the time.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format=stamp + "%(levelname)s %(message)s", force=True)
