"""A throwaway PostgreSQL server for the tests: ``initdb`` in a temporary folder, ``pg_ctl start`` on a free
port of 127.0.0.1, stopped and removed at the end of the session.

The server binaries come from the system packages (scripts/system-packages.sh installs them); when they are
missing the tests that need a server skip with that reason. PostgreSQL refuses to run as root, so as root
the server runs as the unprivileged user ``nobody`` (``runuser``), in a folder that user owns. Each test
gets a database of its own (``Server.database()``), so tests never see each other's rows.

Durability is off (fsync, synchronous_commit): the tests check behaviour, not disks; the benchmark starts
its own server with the defaults.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .mosquitto import free_port

SERVER_MISSING = "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/system-packages.sh"
SUPERUSER = "rkvideo"
FAST = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")


def binaries() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


class Server:
    """One server; ``url(name)`` connects to a database on it as its superuser."""

    def __init__(self, bin_dir: Path, settings: str = FAST):
        self.bin_dir, self.settings = bin_dir, settings
        self.folder = Path(tempfile.mkdtemp(prefix="rkvideo-pg-"))
        self.data = self.folder / "data"
        self.port = 0
        self.numbers = itertools.count(1)
        self.as_user: list = []
        if os.geteuid() == 0:       # the server will not run as root
            self.as_user = ["runuser", "-u", "nobody", "--"]
            os.chmod(self.folder, 0o755)
            shutil.chown(self.folder, "nobody")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def start(self) -> Server:
        self.run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                 "--no-locale", "--no-sync")
        for _ in range(5):          # a free port can be taken by someone else before the server binds it
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
                       f"-c max_connections=200 {self.settings}")
            try:
                self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options,
                         "-l", str(self.folder / "server.log"), "-w", "-t", "60", "start")
                return self
            except RuntimeError:
                if "could not bind" not in self.log():
                    raise
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        with_server = self.data.exists()
        try:
            if with_server:
                subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                "-w", "stop"], capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, params=(), database: str = "postgres") -> list:
        """Plain SQL as the superuser, in autocommit mode; rows as dicts."""
        import psycopg
        from psycopg.rows import dict_row
        with psycopg.connect(self.url(database), autocommit=True, row_factory=dict_row) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"test{os.getpid()}_{next(self.numbers)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_server(settings: str = FAST) -> Server:
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError(SERVER_MISSING)
    server = Server(bin_dir, settings)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server (skips when the binaries or psycopg are missing)."""
    pytest.importorskip("psycopg", reason="needs psycopg: pip install -e '.[dev]'")
    if binaries() is None:
        pytest.skip(SERVER_MISSING)
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres):
    """A new empty database on the session's server."""
    return postgres.database()


def jobs(url: str) -> dict:
    """path -> job row of a PostgreSQL store, with ``n``, its number of descriptions (as daemon.jobs)."""
    import psycopg
    from psycopg.rows import dict_row
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        try:
            rows = conn.execute("SELECT jobs.*, (SELECT count(*) FROM descriptions d WHERE d.job_id = jobs.id) AS n "
                                "FROM jobs").fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {row["path"]: row for row in rows}


def sessions_of(url: str, pid: int) -> int:
    """How many sessions the process ``pid`` has open on the server (they end a moment after a kill)."""
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                            [f"rkvideo %:{pid}"]).fetchone()[0]
