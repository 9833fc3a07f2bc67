"""`rkvideo migrate-db`: SQLite -> PostgreSQL -> SQLite gives back the same rows (jobs, descriptions, timeline
moments, thumbnails, sidecars still to write, notifications still to deliver), and it refuses to copy a
database in use or into a full one."""
import sqlite3

from doubles import web as helpers
from doubles.postgres import pg_url, postgres  # noqa: F401 - fixtures
from rkvideo import cli, store
from rkvideo.store import MissingSidecar, Outgoing, Status

TABLES = ("jobs", "descriptions", "events", "thumbnails", "missing_sidecars", "outbox", "announced")


def filled(path):
    """An SQLite database as a board leaves it: described (with moments and thumbnails), queued, failed and
    skipped jobs, a sidecar still to write, a notification still to deliver."""
    with store.open_store(path) as db:
        done = db.put("/srv/cams/door/0800.mp4", Status.QUEUED, root="/srv/cams", size=10, mtime=1.5, digest="h1",
                      duration=12.5)
        db.finish(db.claim("board:1:a"), helpers.result(
            "/srv/cams/door/0800.mp4", "A parcel is left at the door. A note ✓", events=[
                (0.0, 4.5, "A person walks up."), (6.0, 9.0, "A parcel is left.")]),
            missing_sidecars=[MissingSidecar(done, "txt", "/srv/cams/door/0800.mp4.txt", "/srv/cams/door/0800.mp4",
                                             "the text", "disk full")],
            messages=lambda d: [Outgoing("mqtt://broker:1883", f"d{d}", '{"x": 1}', "rkvideo/door", True, done)])
        db.put("/srv/cams/door/0900.mp4", Status.QUEUED, root="/srv/cams", size=20, mtime=2.5, digest="h2")
        db.put("/srv/cams/yard/empty.mp4", Status.FAILED, root="/srv/cams", error="empty file (0 bytes)")
        db.put("/srv/cams/door/copy.mp4", Status.SKIPPED, root="/srv/cams", digest="h1", duplicate_of=done,
               error=store.same_content(db.job(done)))
        db.put("/elsewhere/one-off.mp4", Status.QUEUED, size=5, mtime=3.0, digest="h5")     # outside any root
        db.announce("mqtt://broker:1883", {"homeassistant/sensor/door/config"})
    return path


def table(path, name):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()
    finally:
        conn.close()


def pictures(path) -> list:
    """Every thumbnail's JPEG, by id."""
    with store.open_store(path, readonly=True) as db:
        rows = db.thumbnails([d["id"] for j in db.jobs() for d in db.descriptions(j.id)])
        return [db.thumbnail(t["id"]) for ts in rows.values() for t in ts]


def test_sqlite_to_postgresql_and_back_gives_the_same_rows(tmp_path, pg_url, capsys):
    source = filled(tmp_path / "board.db")
    assert cli.main(["migrate-db", str(source), pg_url]) == 0
    assert ("copied 5 jobs, 1 descriptions, 2 events, 3 thumbnails, 1 missing_sidecars, 1 outbox, 1 announced"
            in capsys.readouterr().out)
    with store.open_store(pg_url, readonly=True) as shared:
        assert [(j.path, j.root, j.relpath, j.status) for j in shared.jobs()] == [
            ("/srv/cams/door/0800.mp4", "cams", "door/0800.mp4", Status.DONE),
            ("/srv/cams/door/0900.mp4", "cams", "door/0900.mp4", Status.QUEUED),
            ("/srv/cams/yard/empty.mp4", "cams", "yard/empty.mp4", Status.FAILED),
            ("/srv/cams/door/copy.mp4", "cams", "door/copy.mp4", Status.SKIPPED),
            ("/elsewhere/one-off.mp4", None, None, Status.QUEUED)]
        assert [h["path"] for h in shared.search("parcel")] == ["/srv/cams/door/0800.mp4"]
        assert [e["text"] for e in shared.events(1)] == ["A person walks up.", "A parcel is left."]
        assert shared.outbox()[0]["message"] == "d1" and shared.missing_sidecars()[0].error == "disk full"
    assert pictures(pg_url) == pictures(source) and len(pictures(source)) == 3
    # New rows after the copy take new ids, above the copied ones.
    with store.open_store(pg_url) as shared:
        assert shared.put("/srv/cams/door/1000.mp4", Status.QUEUED, root="/srv/cams") == 6

    back = tmp_path / "back.db"
    assert cli.main(["migrate-db", pg_url, str(back)]) == 0
    assert "copied 6 jobs, 1 descriptions, 2 events, 3 thumbnails" in capsys.readouterr().out
    for name in TABLES:
        assert table(back, name)[:5] == table(source, name)[:5], name
    assert pictures(back) == pictures(source)                  # the JPEGs are files again
    with store.open_store(back, readonly=True) as copy:
        assert [h["path"] for h in copy.search("parcel")] == ["/srv/cams/door/0800.mp4"]     # FTS rebuilt


def test_root_names_come_from_the_config(tmp_path, pg_url, capsys):
    source = filled(tmp_path / "board.db")
    config = tmp_path / "config.toml"
    config.write_text('[watch]\nroots = { cameras = "/srv/cams" }\n')
    assert cli.main(["migrate-db", str(source), pg_url, "--config", str(config)]) == 0
    with store.open_store(pg_url, readonly=True) as shared:
        assert {j.root for j in shared.jobs()} == {"cameras", None}


def test_a_database_in_use_or_a_full_destination_is_refused(tmp_path, pg_url, capsys):
    source = filled(tmp_path / "board.db")
    with store.open_store(source) as running:
        running.lock_daemon()                                    # a daemon is using it
        assert cli.main(["migrate-db", str(source), pg_url]) == 1
        assert "another `rkvideo watch` is using this database" in capsys.readouterr().err
    assert cli.main(["migrate-db", str(source), pg_url]) == 0
    assert cli.main(["migrate-db", str(source), pg_url]) == 1
    assert "already holds 5 jobs; migrate-db copies into an empty database only" in capsys.readouterr().err
    with store.open_store(pg_url) as shared:
        shared.report("board:7:c", "running")                   # a daemon still reports
    assert cli.main(["migrate-db", pg_url, str(tmp_path / "copy.db")]) == 2
    assert "daemons still use it (board:7:c)" in capsys.readouterr().err
