"""The daemon under hostile or unlucky conditions (issue 9): a database locked, reached by another
path, deleted or replaced; a watched folder deleted and made again; the daemon's own files and
links out of the folder inside a watched folder; sidecars that cannot be written.

Every test runs the real ``rkvideo watch`` in a subprocess on real files and a real SQLite
database (the runtimes are the doubles of tests/doubles/fake_runtime.py); other processes that
hold locks are real processes too.
"""
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys

from doubles import daemon
from rkvideo import store

HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


class WriteLock:
    """Another process holding the database's write lock (``BEGIN IMMEDIATE``) until ``release()``."""

    def __init__(self, db):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        assert self.proc.wait(timeout=30) == 0


def notify_socket(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


def pings(sock) -> int:
    """WATCHDOG=1 messages that arrived since the last call."""
    count = 0
    try:
        while True:
            count += sock.recv(4096).decode().split("\n").count("WATCHDOG=1")
    except BlockingIOError:
        return count


def wait_for_pings(sock, proc, wanted: int) -> None:
    seen = [0]

    def enough():
        seen[0] += pings(sock)
        return seen[0] >= wanted
    daemon.wait_for(enough, proc, f"{wanted} watchdog pings")


# ------------------------------------------------------------ item 2: a locked database

def waits(proc) -> int:
    """How often the daemon said it waits for another process's lock (once per wait and thread)."""
    return proc.log.read_text().count("locked by another process; waiting")


def test_a_database_locked_by_another_process_is_waited_for_and_fails_no_recording(tmp_path):
    """A second process holds the write lock longer than SQLite's busy timeout: at start-up, while a
    description is committed and while a new file is queued. The daemon waits, says so once, keeps
    the watchdog fed, and describes everything once the lock is gone."""
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    store.open_store(db).close()                    # the schema exists; the daemon only has to write
    gate, sock = tmp_path / "gate", notify_socket(tmp_path / "notify")
    gate.touch()
    # A 1 s watchdog: at most one ping per 0.25 s; 8 pings span 1.75 s or more, longer than the watchdog
    # interval and more than SQLite's busy timeout (store.BUSY_SLICE): only waiting and pinging passes.
    env = daemon.environment(RKVIDEO_FAKE_GATE=gate, NOTIFY_SOCKET=tmp_path / "notify", WATCHDOG_USEC=1_000_000)
    assert store.BUSY_SLICE * 2 < 1.75

    lock = WriteLock(db)
    try:
        with daemon.running(folder, db, config, env=env, log=tmp_path / "daemon.log") as proc:
            daemon.wait_for(lambda: waits(proc) == 1, proc, "the wait at start")
            wait_for_pings(sock, proc, 8)
            lock.release()
            daemon.wait_for(lambda: daemon.status(db, a) == "done", proc, "a to be described")

            gate.unlink()
            b = daemon.clip(folder / "b.mp4", 1)
            daemon.wait_for(lambda: daemon.status(db, b) == "running", proc, "b to run")
            lock = WriteLock(db)
            gate.touch()                                # b's description now waits to be committed
            c = daemon.clip(folder / "c.mp4", 2)        # and c to be queued
            daemon.wait_for(lambda: waits(proc) == 3, proc, "both threads to wait")
            pings(sock)
            wait_for_pings(sock, proc, 8)
            assert daemon.status(db, b) == "running" and daemon.status(db, c) is None
            lock.release()
            daemon.wait_for(lambda: daemon.settled(db, [b, c]), proc, "b and c to be described")
            code, err = daemon.stop(proc)
    finally:
        lock.release()
        sock.close()
    assert code == 0, err
    table = daemon.jobs(db)
    assert {p: (j["status"], j["n"]) for p, j in table.items()} == {str(p): ("done", 1) for p in (a, b, c)}
    assert "Traceback" not in err and "cannot be queued" not in err
    assert "lock was released after" in err


# ------------------------------------------------------------ item 3: one daemon per database file

def test_one_daemon_per_database_file_whatever_path_names_it(tmp_path):
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    config = daemon.write_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    db = data / "rkvideo.db"
    (tmp_path / "linked").symlink_to(data, target_is_directory=True)
    gate = tmp_path / "gate"
    with daemon.running(folder, db, config, env=daemon.environment(RKVIDEO_FAKE_GATE=gate)) as proc:
        daemon.wait_for(lambda: daemon.status(db, a) == "running", proc, "a to run")
        (tmp_path / "file-link.db").symlink_to(db)
        for other in (tmp_path / "linked" / "rkvideo.db", tmp_path / "file-link.db",
                      data / ".." / "data" / "." / "rkvideo.db", "data/rkvideo.db"):
            second = daemon.once(folder, other, config, cwd=tmp_path)
            assert second.returncode == 1, (other, second.stderr)
            assert "another `rkvideo watch` is using this database" in second.stderr, other
        gate.touch()
        daemon.wait_for(lambda: daemon.status(db, a) == "done", proc, "a to be described")
        code, err = daemon.stop(proc)
    assert code == 0, err
    job = daemon.jobs(db)[str(a)]
    assert (job["attempts"], job["n"]) == (1, 1)        # nobody else requeued or described it


# ------------------------------------------------------------ item 4: a folder deleted and made again

def test_a_watched_folder_deleted_or_moved_away_and_made_again_is_watched_again(tmp_path):
    """Like a network share or USB disk that is unmounted and mounted again. The rescan is 10 minutes
    away: only watching the new folder finds its files."""
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    with daemon.running(folder, db, config, log=tmp_path / "daemon.log") as proc:
        daemon.wait_for(lambda: daemon.status(db, a) == "done", proc, "a to be described")
        shutil.rmtree(folder)                       # deleted and made again at once (an inode may be reused)
        folder.mkdir()
        b = daemon.clip(folder / "b.mp4", 1)
        daemon.wait_for(lambda: daemon.status(db, b) == "done", proc, "b in the new folder")

        away = tmp_path / "unmounted"
        folder.rename(away)                         # the old folder lives on elsewhere
        folder.mkdir()
        c = daemon.clip(folder / "c.mp4", 2)
        daemon.wait_for(lambda: daemon.status(db, c) == "done", proc, "c in the newer folder")
        stray = daemon.clip(away / "stray.mp4", 3)   # not in the watched folder any more
        d = daemon.clip(folder / "d.mp4", 4)
        daemon.wait_for(lambda: daemon.status(db, d) == "done", proc, "d")
        code, err = daemon.stop(proc)
    assert code == 0, err
    assert f"watching {folder} again" in err
    table = daemon.jobs(db)
    assert str(folder / "stray.mp4") not in table and str(stray) not in table
    assert all(table[str(p)]["status"] == "done" for p in (b, c, d))


# ------------------------------------------------------------ item 8: the daemon's own files

def test_the_daemons_own_files_are_never_queued_and_a_bad_file_fails_once(tmp_path, capsys):
    """The database, its -wal/-shm/-journal and lock files, the sidecars and the output folder all sit
    in the watched folder, and the patterns match everything."""
    from rkvideo import cli

    folder = tmp_path / "cameras"
    clips = daemon.clips(folder, 2)
    notes = folder / "notes.txt"
    notes.write_text("not a video")
    config = daemon.write_config(tmp_path)
    config.write_text(config.read_text().replace('[watch]\n', '[watch]\npatterns = ["*"]\n')
                      + f'dir = "{folder / "out"}"\n')
    (tmp_path / "beside").mkdir()
    beside = daemon.write_config(tmp_path / "beside")     # sidecars next to the recordings
    beside.write_text(beside.read_text().replace('[watch]\n', '[watch]\npatterns = ["*"]\n'))
    db = folder / "rk.db"
    (folder / "rk.db-journal").write_bytes(b"")           # left by a tool that opened it without WAL
    first = daemon.once(folder, db, beside)
    assert first.returncode == 0, first.stderr
    assert (folder / "clip00.mp4.json").exists()
    with daemon.running(folder, db, config, log=tmp_path / "daemon.log",
                        env=daemon.environment(RKVIDEO_TEST_RESCAN=0.2)) as proc:
        more = daemon.clips(folder, 3, first=2)              # every commit changes rk.db-wal
        daemon.wait_for(lambda: daemon.settled(db, more), proc, "more files")
        code, err = daemon.stop(proc)
    assert code == 0, err
    assert (folder / "out" / "cameras" / "clip02.mp4.json").exists()
    again = daemon.once(folder, db, config)
    assert again.returncode == 0, again.stderr
    err = first.stderr + err + again.stderr
    table = daemon.jobs(db)
    assert set(table) == {str(p) for p in clips + more + [notes]}, sorted(table)
    assert table[str(notes)]["status"] == "failed"
    assert err.count(f"failed {notes}") == 1             # unchanged: failed once, not at every rescan
    finished = table[str(notes)]["finished_at"]

    notes.write_text("still not a video")                   # changed: looked at again
    changed = daemon.once(folder, db, config)
    assert changed.stderr.count(f"failed {notes}") == 1
    assert daemon.jobs(db)[str(notes)]["finished_at"] > finished
    assert cli.main(["retry", str(notes), "--db", str(db)]) == 0
    capsys.readouterr()
    retried = daemon.once(folder, db, config)
    assert f"failed {notes}" in retried.stderr and daemon.jobs(db)[str(notes)]["status"] == "failed"


# ------------------------------------------------------------ item 12: the database deleted or replaced

def test_a_database_deleted_or_replaced_under_the_daemon_stops_it_before_anything_is_lost(tmp_path):
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    config = daemon.write_config(tmp_path, sidecars=())
    db = tmp_path / "rkvideo.db"
    for number, how in enumerate(("deleted", "replaced"), start=1):
        with daemon.running(folder, db, config, log=tmp_path / f"{how}.log") as proc:
            daemon.wait_for(lambda proc=proc: daemon.logged(proc, "model loaded"), proc, "the database opened")
            daemon.wait_for(lambda: daemon.status(db, a) == "done", proc, "a to be described")
            if how == "deleted":
                for suffix in ("", "-wal", "-shm"):
                    os.unlink(f"{db}{suffix}")
            else:
                copy = tmp_path / "copy.db"
                shutil.copyfile(db, copy)
                os.replace(copy, db)
            b = daemon.clip(folder / f"b-{how}.mp4", number)
            proc.wait(timeout=30)
        code, err = daemon.stop(proc)
        assert code == 1, err
        assert f"{db}: the database file was {how} while rkvideo had it open" in err
        assert f"done {b}" not in err and "Traceback" not in err
        # Restarted (as systemd does): a fresh database, or the one put in its place, gets the work.
        again = daemon.once(folder, db, config)
        assert again.returncode == 0, again.stderr
        assert daemon.status(db, b) == "done"


# ------------------------------------------------------------ item 13: links out of the folder

def test_links_out_of_the_watched_folder_are_not_described_unless_asked(tmp_path):
    private = tmp_path / "private"
    secret = daemon.clip(private / "secret.mp4", 0)
    folder = tmp_path / "cameras"
    inside = daemon.clip(folder / "sub" / "inside.bin", 1)       # not matched by the patterns itself
    out_link = folder / "out.mp4"
    out_link.symlink_to(secret)
    in_link = folder / "in.mp4"
    in_link.symlink_to(inside)                       # its real path is in the watched folder
    (folder / "linked-folder").symlink_to(private, target_is_directory=True)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    with daemon.running(folder, db, config) as proc:
        daemon.wait_for(lambda: daemon.settled(db, [out_link, in_link]), proc, "the start-up scan")
        late = folder / "late.mp4"
        late.symlink_to(secret)                      # made while the daemon runs
        daemon.wait_for(lambda: daemon.settled(db, [late]), proc, "the late link")
        code, err = daemon.stop(proc)
    assert code == 0, err
    table = daemon.jobs(db)
    for link in (out_link, late):
        assert (table[str(link)]["status"], table[str(link)]["n"]) == ("skipped", 0)
        assert "symbolic link to a file outside the watched folders" in table[str(link)]["error"]
        assert not (folder / f"{link.name}.txt").exists()
    assert table[str(in_link)]["status"] == "done"
    assert set(table) == {str(out_link), str(late), str(in_link)}       # nothing below the linked folder

    config.write_text(config.read_text().replace("[watch]\n", "[watch]\nfollow_symlinks = true\n"))
    late.unlink()                                    # one link to secret.mp4 is enough
    db2 = tmp_path / "followed.db"
    result = daemon.once(folder, db2, config)
    assert result.returncode == 0, result.stderr
    assert daemon.status(db2, out_link) == "done"


# ------------------------------------------------------------ item 6: sidecars

def test_sidecars_are_written_one_by_one_and_the_missing_ones_are_retried(tmp_path):
    folder = tmp_path / "cameras"
    long_name = "ä" * 120 + ".mp4"                     # 244 bytes; "….mp4.json" 249: fits, a long temp name would not
    long_one = daemon.clip(folder / long_name, 0)
    door = daemon.clip(folder / "door.mp4", 1)
    (folder / "door.mp4.json").mkdir()               # something in the way of one sidecar
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    for kind in ("txt", "json", "vtt"):
        assert (folder / f"{long_name}.{kind}").is_file()
    assert (folder / "door.mp4.txt").is_file() and (folder / "door.mp4.vtt").is_file()
    assert daemon.status(db, door) == daemon.status(db, long_one) == "done"
    (missing,) = daemon.query(db, "SELECT * FROM missing_sidecars")
    assert (missing["kind"], missing["path"]) == ("json", str(folder / "door.mp4.json"))
    assert "Is a directory" in missing["error"]
    assert f"{door}: json sidecar not written" in result.stderr

    # Still in the way: the command says so and keeps it.
    kept = daemon.rkvideo("retry", "--sidecars", "--db", db)
    assert kept.returncode == 1 and "door.mp4.json" in kept.stderr and "Is a directory" in kept.stderr
    assert len(daemon.query(db, "SELECT * FROM missing_sidecars")) == 1
    (folder / "door.mp4.json").rmdir()
    written = daemon.rkvideo("retry", "--sidecars", "--db", db)
    assert written.returncode == 0, written.stderr
    assert "1 sidecar written" in written.stdout
    text = json.loads((folder / "door.mp4.json").read_text())
    (description,) = daemon.query(db, "SELECT text FROM descriptions WHERE path = ?", [str(door)])
    assert (text["recording"], text["text"]) == (str(door), description["text"])
    assert daemon.query(db, "SELECT * FROM missing_sidecars") == []
    assert daemon.status(db, door) == "done"

    # The daemon's next scan retries by itself.
    yard = folder / "yard.mp4"
    (folder / "yard.mp4.vtt").mkdir()
    daemon.clip(yard, 2)
    with daemon.running(folder, db, config, env=daemon.environment(RKVIDEO_TEST_RESCAN=0.3)) as proc:
        daemon.wait_for(lambda: daemon.query(db, "SELECT kind FROM missing_sidecars") == [{"kind": "vtt"}], proc,
                        "the vtt sidecar to be missing")
        (folder / "yard.mp4.vtt").rmdir()
        daemon.wait_for(lambda: (folder / "yard.mp4.vtt").is_file(), proc, "a scan to write it")
        daemon.wait_for(lambda: daemon.query(db, "SELECT * FROM missing_sidecars") == [], proc, "the row to go")
        code, err = daemon.stop(proc)
    assert code == 0, err
    assert (folder / "yard.mp4.vtt").read_text().startswith("WEBVTT")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM descriptions").fetchone()[0] == 3
    conn.close()
