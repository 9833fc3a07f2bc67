"""``rkvideo watch``: check the folders and settings, then run the daemon in the foreground.

Why the checks live here and not in the daemon: what is wrong as given (a
file instead of a folder, two folders whose sidecars would collide) must stop
with status 2, which systemd does not restart; a folder that is not there yet
(a network share or USB disk mounted late) is a runtime condition, status 1,
so that systemd tries again. The daemon itself gets folders that exist.

Folders have names (``[watch] roots``, else their own name): a database
shared by several boards keys recordings by them, so there two watched
folders may not share a name.
"""
from __future__ import annotations

import logging
import os
import socket
import stat
import sys
from pathlib import Path

import click

from .. import config as config_mod, daemon, errors, printable, store
from ..store.names import folder_name
from .common import CONTEXT, config_option, database, db_option, load_config, plural, roots

EPILOG = """\b
Examples:
  rkvideo watch /srv/cameras                          run until stopped (Ctrl-C or SIGTERM)
  rkvideo watch /srv/cameras/door /srv/cameras/yard --db /var/lib/rkvideo/rkvideo.db
  rkvideo watch /srv/cameras --once                   describe the backlog, then exit (cron)
  rkvideo watch --db postgresql://rkvideo@nas/rkvideo    the [watch] roots, one queue for several boards
  rkvideo watch --drain                               this host's daemons: finish the job, take no new one

\b
Then: rkvideo list, rkvideo search "red car", rkvideo show PATH, rkvideo retry, rkvideo workers.
Settings: [watch] roots, patterns, recursive, settle_seconds, max_attempts, retry_backoff, db,
follow_symlinks; [notify] mqtt, webhooks (messages for Home Assistant and others; see rkvideo outbox);
[output] sidecars, dir. SIGUSR1 drains a running daemon as --drain does. Exit status: 0 stopped
cleanly (or drained), 1 runtime failure (also a folder that is not there yet, or a database deleted
under the daemon: systemd starts it again), 2 bad usage or configuration."""


@click.command("watch", context_settings=CONTEXT, epilog=EPILOG,
               short_help="describe every new recording in folders (daemon)")
@click.argument("folders", nargs=-1, metavar="[DIR]...")
@db_option()
@click.option("--once", is_flag=True, help="describe what is there now, then exit")
@click.option("--drain", is_flag=True, help="ask the daemons of this host that use the database to finish "
                                            "their current job, take no new one and exit (no DIR)")
@click.option("--verbose", "-v", is_flag=True, help="log every file event and queue decision")
@config_option
def command(folders, db, once, drain, verbose, config):
    """Follow folders where cameras, NVRs or dashcams drop recordings and describe each new recording
    exactly once, storing the text in a searchable database (and sidecar files if output.sidecars is
    set). On start the folders are scanned for recordings that arrived while the daemon was down; then
    new and moved-in files are followed. A file is described once it has stopped growing for
    watch.settle_seconds. The model is loaded once. Runs in the foreground; under systemd it reports
    READY=1 and watchdog pings (see systemd/rkvideo.service). With no DIR, the folders of [watch] roots
    are watched. Any number of daemons, on any number of machines, may share one postgresql:// database."""
    cfg = load_config(config)
    target = database(db, config)
    if drain:
        return drain_host(target, config, folders)
    pairs = watched(cfg, folders)
    check_sidecar_folders(cfg, [root for _, root in pairs])
    folders_by_name = daemon_roots(pairs, target)
    setup_logging(verbose)
    # A database that cannot be opened, or that another daemon uses, raises StoreError: status 1.
    return OUTCOME_STATUS[daemon.watch(cfg, folders_by_name, target, once=once, on_second_signal=exit_at_once)]


# How the daemon ended, as the status systemd acts on (RestartPreventExitStatus=2: no restart).
OUTCOME_STATUS = {daemon.Outcome.STOPPED: errors.EXIT_OK, daemon.Outcome.RUNTIME_FAILURE: errors.EXIT_RUNTIME,
                  daemon.Outcome.CONFIGURATION_ERROR: errors.EXIT_USAGE}


def exit_at_once(signum: int) -> None:
    """A second SIGINT/SIGTERM: leave now, without waiting for the runtime, with status 128 + signal."""
    os._exit(128 + signum)


def watched(cfg, folders) -> list:
    """(name, resolved folder) for each DIR — its [watch] roots name, else its own — or, with no DIR, the
    [watch] roots."""
    configured = cfg.roots()
    if not folders:
        if not configured:
            raise errors.UsageError("give the folders to watch (DIR...), or name them in [watch] roots")
        return [(name, folder_root(str(folder))) for name, folder in configured.items()]
    by_folder = {Path(folder).resolve(): name for name, folder in configured.items()}
    pairs = []
    for folder in folders:
        root = folder_root(folder)
        pairs.append((by_folder.get(root, folder_name(str(root))), root))
    return pairs


def daemon_roots(pairs: list, target):
    """The folders by name; a shared database keys recordings by folder name, so two watched folders
    may not share one there (one board's SQLite file keys them by path: the plain list will do)."""
    names: dict = {}
    for name, root in pairs:
        other = names.setdefault(name, root)
        if other == root:
            continue
        if config_mod.is_url(str(target)):
            raise errors.UsageError(f"{other} and {root} are both named {name!r}: a shared database keys "
                                    f"recordings by folder name; name them in [watch] roots")
        return [root for _, root in pairs]
    return names


def drain_host(target, config: str | None, folders) -> int:
    """``--drain``: every live daemon of this host on this database is asked to drain."""
    if folders:
        raise errors.UsageError("--drain takes no DIR: it asks the daemons of this host to finish and exit")
    try:
        jobs = store.open_store(target, create=False, roots=roots(config))
    except store.StoreError as exc:
        raise errors.UsageError(str(exc)) from None
    try:
        asked = jobs.drain(socket.gethostname())
    finally:
        jobs.close()
    if not asked:
        print(f"no daemon of this host ({socket.gethostname()}) is running on {jobs.location}", file=sys.stderr)
        return errors.EXIT_RUNTIME
    print(f"asked {plural(len(asked), 'worker')} to drain: {', '.join(asked)}")
    return None


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
    """One line per record on stderr; file names in it escaped (``printable.LogFormatter``), so a
    newline or an escape sequence in a name can never forge a line or reach the terminal."""
    # journald stamps each line itself; a terminal or a log file needs the time.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(printable.LogFormatter(stamp + "%(levelname)s %(message)s"))
    logging.basicConfig(handlers=[handler], level=logging.DEBUG if verbose else logging.INFO, force=True)
