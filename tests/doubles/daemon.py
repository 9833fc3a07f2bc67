"""Helpers for the daemon tests: clips, a config, the daemon as a real subprocess, polling the database.

Waiting is always "poll until a condition holds or a deadline passes", never
a fixed sleep; a daemon that exits early fails the wait with its stderr.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import footage

from . import fake_runtime

LAUNCHER = Path(__file__).with_name("run_daemon.py")
DEADLINE = 30.0

CONFIG = """
[model]
vision = "{vision}"
llm = "{llm}"
tokens_per_image = 4
embed_width = 8
[describe]
frames = 4
mode = "{mode}"
[llm]
max_new_tokens = 32
[watch]
settle_seconds = {settle}
max_attempts = {max_attempts}
retry_backoff = 0
{watch}
[output]
sidecars = {sidecars}
"""


def write_config(folder: Path, settle: float = 0.2, max_attempts: int = 3, sidecars=("txt", "json", "vtt"),
                 mode: str = "clip", timeline: str = "", roots: dict | None = None) -> Path:
    """``folder``/config.toml, naming model files beside it that the test-double runtimes open;
    ``mode`` is describe.mode, ``timeline`` the lines of a [timeline] section, ``roots`` ``[watch] roots``
    (name -> folder)."""
    path = folder / "config.toml"
    listed = "[" + ", ".join(f'"{s}"' for s in sidecars) + "]"
    vision, llm = fake_runtime.write_models(folder)
    named = "roots = {" + ", ".join(f'{n} = "{f}"' for n, f in roots.items()) + "}" if roots else ""
    text = CONFIG.format(vision=vision.name, llm=llm.name, settle=settle, max_attempts=max_attempts,
                         sidecars=listed, mode=mode, watch=named)
    path.write_text(text + (f"[timeline]\n{timeline}\n" if timeline else ""))
    return path


def clip(path: Path, number: int) -> Path:
    """A small real clip; different numbers give different content (different lengths)."""
    source = footage.clip(f"daemon{number}.mp4", seconds=1.0 + 0.1 * number, fps=10, size=(64, 48))
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return path


def clips(folder: Path, count: int, prefix: str = "clip", first: int = 0) -> list:
    return [clip(folder / f"{prefix}{n:02d}.mp4", n) for n in range(first, first + count)]


def command(*args) -> list:
    return [sys.executable, str(LAUNCHER), *map(str, args)]


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RKVIDEO_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(folder, db, config, *extra, env=None, log=None, **popen) -> subprocess.Popen:
    """The daemon as a subprocess. ``log``: a file that gets its stderr, so a test can read the log
    while the daemon runs (``logged``); ``stop`` then returns the file's text as the stderr."""
    folders = folder if isinstance(folder, (list, tuple)) else [folder]
    with open(log, "w") if log else contextlib.nullcontext(subprocess.PIPE) as stderr:
        proc = subprocess.Popen(command("watch", *folders, "--db", db, "--config", config, *extra),
                                env=env or environment(), stdout=subprocess.PIPE, stderr=stderr, text=True,
                                **popen)
    proc.log = Path(log) if log else None
    return proc


@contextlib.contextmanager
def running(folder, db, config, *extra, **kwargs):
    """``start``, and a kill on the way out if the test left it running (a failed assertion)."""
    proc = start(folder, db, config, *extra, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def logged(proc: subprocess.Popen, text: str) -> bool:
    """The daemon started with ``log=`` has written ``text`` to its log."""
    return proc.log.exists() and text in proc.log.read_text(errors="replace")


def once(folder, db, config, *extra, env=None, **popen) -> subprocess.CompletedProcess:
    proc = start(folder, db, config, "--once", *extra, env=env, **popen)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"rkvideo watch --once did not finish in 60 s:\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def rkvideo(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), env=env or environment(), capture_output=True, text=True, timeout=60)


def wait_for(condition, proc: subprocess.Popen | None = None, what: str = "condition", timeout: float = DEADLINE):
    """Poll ``condition()`` until it returns something truthy; fail if ``proc`` exits or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            if getattr(proc, "log", None):
                err = proc.log.read_text(errors="replace")
            raise AssertionError(f"daemon exited ({proc.returncode}) before {what}:\n{err}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> tuple:
    """SIGTERM, then the exit code and stderr."""
    if proc.poll() is None:
        proc.terminate()
    _, err = proc.communicate(timeout=30)
    if getattr(proc, "log", None):
        err = proc.log.read_text(errors="replace")
    return proc.returncode, err


def kill(proc: subprocess.Popen) -> str:
    proc.kill()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -9, err
    return err


def query(db: Path, sql: str, params=()) -> list:
    if not Path(db).exists():
        return []
    conn = sqlite3.connect(str(db), timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def jobs(db: Path) -> dict:
    """path -> job row, with its number of descriptions."""
    rows = query(db, "SELECT jobs.*, (SELECT count(*) FROM descriptions d WHERE d.job_id = jobs.id) AS n "
                     "FROM jobs")
    return {row["path"]: row for row in rows}


def status(db: Path, path) -> str | None:
    row = jobs(db).get(str(path))
    return row["status"] if row else None


def settled(db: Path, paths) -> bool:
    """Every path has a job that is no longer queued or running."""
    table = jobs(db)
    return all(str(p) in table and table[str(p)]["status"] not in ("queued", "running") for p in paths)
