"""The database commands against databases that are not simply ours: someone else's SQLite file
given to ``describe --db``, and a user who may read the database but not write it (issue 9)."""
import contextlib
import io
import json
import os
import sqlite3

from doubles import daemon, users
from doubles.users import shared_folder  # noqa: F401 - a fixture
from rkvideo import cli


def tables_and_mode(path):
    conn = sqlite3.connect(path)
    try:
        return ([name for (name,) in conn.execute("SELECT name FROM sqlite_master ORDER BY name")],
                conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def test_describe_db_refuses_someone_elses_database_before_describing(tmp_path):
    clip = daemon.clip(tmp_path / "door.mp4", 1)
    config = daemon.write_config(tmp_path)
    other = tmp_path / "photos.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    calls = tmp_path / "calls.log"
    refused = daemon.rkvideo("describe", clip, "--db", other, "--config", config,
                             env=daemon.environment(RKVIDEO_FAKE_LOG=calls))
    assert refused.returncode == cli.EXIT_USAGE, refused.stderr
    assert f"{other}: not an rkvideo database (it has other tables: photos); pass another --db" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and refused.stdout == ""
    assert not calls.exists()                                   # nothing was described
    assert tables_and_mode(other) == (["photos"], "delete")       # untouched: no tables added, no WAL
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("photos")) == ["photos.db"]

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")                                      # an empty file becomes ours
    stored = daemon.rkvideo("describe", clip, "--db", empty, "--config", config)
    assert stored.returncode == 0, stored.stderr
    assert "jobs" in tables_and_mode(empty)[0] and daemon.status(empty, clip) == "done"


def run_cli(*argv) -> dict:
    """``rkvideo ARGV`` in this process: its status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in argv])
    return {"status": status, "out": out.getvalue(), "err": err.getvalue()}


def read_as_nobody(folder, db, clip) -> dict:
    """list, search and show (by path and by id) as a user who may not write the database."""
    import rkvideo.store.sqlite  # noqa: F401 - loaded before the child drops privileges

    def read():
        listed = run_cli("list", "--db", db, "--json")
        found = run_cli("search", "recording", "--db", db, "--json")
        by_path = run_cli("show", clip, "--db", db, "--json")
        job_id = json.loads(listed["out"])[0]["id"] if listed["status"] == 0 else 0
        by_id = run_cli("show", job_id, "--db", db)
        return {"list": listed, "search": found, "show": by_path, "show_id": by_id, "uid": os.geteuid()}

    return users.as_reader(folder, str(db), read)


def test_a_user_who_may_only_read_the_database_lists_searches_and_shows(shared_folder, tmp_path):  # noqa: F811
    folder = tmp_path / "cameras"
    clip = daemon.clip(folder / "door.mp4", 1)
    config = daemon.write_config(tmp_path)
    db = os.path.join(shared_folder, "rkvideo.db")
    with daemon.running(folder, db, config) as proc:
        daemon.wait_for(lambda: daemon.status(db, clip) == "done", proc, "the clip")
        while_running = read_as_nobody(shared_folder, db, clip)     # through the daemon's -wal and -shm
        code, err = daemon.stop(proc)
    assert code == 0, err
    stopped = read_as_nobody(shared_folder, db, clip)              # no -wal: the file alone
    assert not os.path.exists(db + "-wal")
    for answer in (while_running, stopped):
        assert "error" not in answer, answer
        if os.geteuid() == 0:
            assert answer["uid"] == users.NOBODY
        for command in ("list", "search", "show", "show_id"):
            assert answer[command]["status"] == 0, answer[command]["err"]
            assert "readonly" not in answer[command]["err"]
        assert [job["path"] for job in json.loads(answer["list"]["out"])] == [str(clip)]
        assert [hit["path"] for hit in json.loads(answer["search"]["out"])] == [str(clip)]
        assert json.loads(answer["show"]["out"])["descriptions"][0]["text"].startswith("The recording door")
        assert str(clip) in answer["show_id"]["out"]
