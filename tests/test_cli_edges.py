"""One line and the right exit status, never a traceback, at the edges a user meets (issue 9, item 9).

Standard output closed or on a full disk, a config file that is not UTF-8, a working directory the
user cannot read, numbers too large for SQLite, a database locked by another process, and a full
disk under the database. Every case runs the real command line in a real process.
"""
from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from doubles import capabilities, daemon

HUGE = "99999999999999999999999"


def start(*args, stdout=subprocess.PIPE, close_stdout=False, cwd=None, preexec=None) -> subprocess.Popen:
    """``rkvideo ARGS`` (with the test-double runtimes) started in a real process."""
    argv = daemon.command(*args)
    if close_stdout:
        argv = ["sh", "-c", 'exec "$@" >&-', "sh", *argv]
    return subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, cwd=cwd, preexec_fn=preexec,
                            env=daemon.environment())


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, (out or b"").decode(), err.decode()


def run(*args, **options) -> tuple[int, str, str]:
    """(status, stdout, stderr) of one command."""
    return finish(start(*args, **options))


def run_each(commands: list, **options) -> list:
    """Several commands at once (each process takes a second to start): [(args, status, stdout, stderr)]."""
    procs = [(args, start(*args, **options)) for args in commands]
    return [(args, *finish(proc)) for args, proc in procs]


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rkvideo: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A config for the test-double runtimes, a clip, and a database with two described clips."""
    tmp = tmp_path_factory.mktemp("edges")
    config = daemon.write_config(tmp)
    folder = tmp / "cameras"
    daemon.clips(folder, 2)
    db = tmp / "rkvideo.db"
    assert daemon.once(folder, db, config).returncode == 0
    return tmp, config, folder / "clip00.mp4", db


# ------------------------------------------------------------------ standard output

def output_commands(setup) -> list:
    tmp, config, clip, db = setup
    return [("--help",), ("models",), ("models", "--json"), ("list", "--json", "--db", db),
            ("describe", clip, "--config", config), ("describe", clip, "--config", config, "--json"),
            ("describe", clip, "--dry-run", "--config", config)]


def test_stdout_on_a_full_disk_is_one_line_and_status_1(setup):
    with open("/dev/full", "wb") as full:
        results = run_each(output_commands(setup), stdout=full)
    for args, code, _, err in results:
        assert code == 1, (args, err)
        assert one_error_line(err) == "rkvideo: error: cannot write to standard output: No space left on device"


def test_closed_stdout_is_one_line_and_status_1(setup):
    for args, code, _, err in run_each(output_commands(setup), close_stdout=True):
        assert code == 1, (args, err)
        assert "standard output is closed" in one_error_line(err)


def test_a_reader_that_went_away_ends_the_command_quietly(setup):
    """`rkvideo list | head`: the reader has what it wanted; status 0 and nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        results = run_each(output_commands(setup), stdout=write)
    finally:
        os.close(write)
    for args, code, _, err in results:
        assert (code, err) == (0, ""), args


# ------------------------------------------------------------------ the config file

def test_a_config_file_that_is_not_utf8_names_the_file(tmp_path, setup):
    config = tmp_path / "latin1.toml"
    config.write_bytes('[describe]\nprompt = "Was passiert in der Einfahrt? Tür"\n'.encode("latin-1"))
    code, _, err = run("describe", setup[2], "--dry-run", "--config", config)
    assert code == 2
    assert one_error_line(err) == (f"rkvideo: error: {config}: not UTF-8 text (byte 0xfc at offset 52); "
                                   f"save the file as UTF-8")


def test_a_working_directory_the_user_cannot_read_is_one_line(tmp_path, setup):
    preexec = None
    if os.geteuid() == 0:
        if not capabilities.can_drop_capabilities():
            pytest.skip("running as root without CAP_SETPCAP: chmod cannot stop root from reading")
        preexec = capabilities.drop_dac_capabilities
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)               # the process starts inside it; stat("config.toml") then fails
    try:
        code, _, err = run("describe", setup[2], "--dry-run", cwd=locked, preexec=preexec)
    finally:
        locked.chmod(0o700)
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("rkvideo: error: config.toml: cannot look for a config file in the current folder: "
                           "Permission denied"), line
    assert "--config" in line


# ------------------------------------------------------------------ numbers

def test_huge_ids_and_limits_are_answered_not_crashed(setup):
    _, _, _, db = setup
    show, retry, search = run_each([("show", HUGE, "--db", db), ("retry", HUGE, "--db", db),
                                    ("search", "recording", "--limit", HUGE, "--db", db)])
    for _, code, _, err in (show, retry):
        assert code == 2
        assert one_error_line(err) == f"rkvideo: error: {HUGE}: not in the database {db} (see `rkvideo list`)"
    _, code, out, err = search
    assert code == 0, err
    assert out.count("(job ") == 2                        # a huge limit means every match


def test_huge_integers_in_the_config_are_refused_with_the_key(tmp_path, setup):
    config = tmp_path / "big.toml"
    config.write_text(f"[llm]\nseed = {HUGE}\n")
    code, _, err = run("describe", setup[2], "--dry-run", "--config", config)
    assert code == 2
    assert one_error_line(err) == f"rkvideo: error: {config}: llm.seed must be at most 2147483647, got {HUGE}"


# ------------------------------------------------------------------ the database

@contextlib.contextmanager
def locked(db: Path):
    """Another connection holding the database's exclusive lock, with its last commit still in the -wal
    (so a reader cannot read around it)."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("UPDATE jobs SET attempts = attempts + 1")       # a real change: a no-op writes nothing
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE jobs SET attempts = attempts - 1")
    try:
        yield
    finally:
        conn.execute("COMMIT")
        conn.close()


def wait_for_line(proc: subprocess.Popen, words: str, timeout: float = 30.0) -> str:
    """The first stderr line of ``proc`` holding ``words`` (polled with a deadline, never a sleep)."""
    end = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            break
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        for line in seen.decode(errors="replace").splitlines():
            if words in line:
                return line
    raise AssertionError(f"no line with {words!r} on stderr: {seen!r}")


def test_a_locked_database_at_start_is_waited_for(setup):
    """A reading command waits for another process's exclusive lock, says so on one line, and goes on
    when the lock is released."""
    _, _, _, db = setup
    with locked(db):
        proc = start("list", "--db", db)
        line = wait_for_line(proc, "waiting for it")
        assert line == f"rkvideo: warning: {db}: the database is locked by another process; waiting for it"
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"clip00.mp4" in out


def test_a_lock_that_is_not_released_is_one_line_and_status_1(setup, capsys, monkeypatch):
    """After BUSY_LIMIT (30 s; half a second here) the command gives up: status 1, as a lock passes."""
    from rkvideo import cli, store
    _, _, _, db = setup
    monkeypatch.setattr(store.dbfile, "BUSY_LIMIT", 0.5)
    with locked(db):
        for args in (("list",), ("show", "1"), ("search", "recording")):
            code = cli.main([*args, "--db", str(db)])
            err = capsys.readouterr().err
            assert code == 1, (args, err)
            lines = [line for line in err.splitlines() if line.startswith("rkvideo: error: ")]
            assert lines == [f"rkvideo: error: {db}: the database is locked by another process (waited 0.5s); "
                             f"try again when it is done"], err


@contextlib.contextmanager
def small_disk(size: str = "1m"):
    """A real full-able file system: a tmpfs of ``size``, mounted for the test."""
    where = Path(tempfile.mkdtemp(prefix="rkvideo-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); run the tests as root")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    assert os.statvfs(folder).f_bavail == 0


def test_a_full_disk_under_the_database_is_one_line_and_status_1(setup):
    tmp, config, clip, _ = setup
    with small_disk() as disk:
        db = disk / "rkvideo.db"
        code, _, err = run("describe", clip, "--config", config, "--db", db)
        assert code == 0, err
        fill(disk)
        code, _, err = run("describe", clip, "--config", config, "--db", db)
        assert code == 1
        errors = [line for line in err.splitlines() if line.startswith("rkvideo: error: ")]
        assert len(errors) == 1 and "Traceback" not in err, err
        assert f"{db}: cannot open the database: the disk holding it is full" in errors[0]
        # What is stored can still be read.
        code, out, err = run("list", "--db", db)
        assert code == 0, err
        assert str(clip) in out
