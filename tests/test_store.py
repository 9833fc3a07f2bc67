"""The job store on its own, on real databases: schema and migrations, queue transitions, atomic finish,
read-only opens, fingerprints, search, workers, recovery.

One suite for both backends: the ``db`` and ``target`` fixtures run each test on an SQLite file and on a
database of a real PostgreSQL server (tests/doubles/postgres.py); tests of SQLite's own file handling
(WAL, the daemon lock, read-only users, its migrations from the pre-migration schema) use ``sqlite_db``.
Where the backends differ on purpose, the test says which way and why."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from doubles import users
from doubles.postgres import pg_url, postgres  # noqa: F401 - fixtures
from doubles.users import shared_folder  # noqa: F401 - a fixture
from rkvideo import errors, store
from rkvideo.store import Status


def result(text="A red car parks.", prompt="Describe what happens in this video.", path="/cam/a.mp4"):
    """Stands in for pipeline.Result: the attributes the store reads."""
    return SimpleNamespace(inputs=[path], kind="video", text=text, prompt=prompt,
                           frames=[{"index": 0, "pts": 100, "seconds": 0.5, "source": path}],
                           model={"profile": "qwen2-vl-2b", "vision": "enc.rknn", "llm": "llm.rkllm"},
                           tokens={"prompt": 300, "vision": 198, "new": 12}, timings={"generate": 1.5},
                           notes=["a note"], events=[])


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    """Where a store lives: an SQLite file path, or the URL of a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "sub" / "rkvideo.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def db(target):
    s = store.open_store(target)
    yield s
    s.close()


@pytest.fixture
def sqlite_db(tmp_path):
    s = store.open_store(tmp_path / "sub" / "rkvideo.db")
    yield s
    s.close()


def on_postgres(db) -> bool:
    return str(db.location).startswith("postgresql://")


def sql(path, statement, params=()):
    """Plain SQL on the database (a file path or a URL), the way any other tool reads it; rows as tuples."""
    if str(path).startswith("postgresql://"):
        import psycopg
        with psycopg.connect(str(path), autocommit=True) as conn:
            cur = conn.execute(statement.replace("?", "%s"), params)
            return cur.fetchall() if cur.description else []
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def test_schema_is_plain_tables_in_wal_mode_with_a_version(sqlite_db, tmp_path):
    db = sqlite_db
    conn = sqlite3.connect(db.location)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "descriptions", "descriptions_fts", "schema_version"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(store.SCHEMA_VERSION,)]
    columns = {r[1] for r in conn.execute("PRAGMA table_info(descriptions)")}
    assert {"text", "model", "vision_model", "llm_model", "prompt", "frames", "prompt_tokens", "new_tokens",
            "timings", "created_at"} <= columns
    conn.close()
    store.open_store(db.location).close()        # opening again adds nothing
    conn = sqlite3.connect(db.location)
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1
    conn.close()


def test_the_store_is_a_job_store_and_its_errors_are_runtime_failures(db):
    assert isinstance(db, store.JobStore)
    assert issubclass(store.StoreError, errors.RuntimeFailure)


def test_statuses_are_the_words_stored_in_the_database(db):
    assert [s.value for s in Status] == ["queued", "running", "done", "failed", "skipped"]
    assert f"{Status.DONE}" == str(Status.DONE) == "%s" % Status.DONE == "done"  # noqa: UP031 - as logging does
    db.put("/cam/a.mp4", Status.SKIPPED, error="a copy")
    assert sql(db.location, "SELECT status FROM jobs") == [("skipped",)]
    assert db.counts() == {Status.SKIPPED: 1} and db.counts()["skipped"] == 1


def test_newer_schema_is_refused(db):
    sql(db.location, "UPDATE schema_version SET version = ?", [store.SCHEMA_VERSION + 1])
    with pytest.raises(store.StoreError, match="newer than this rkvideo") as caught:
        store.open_store(db.location)
    assert db.location in str(caught.value)


def test_read_only_commands_do_not_create_a_database(tmp_path):
    for kwargs in ({"create": False}, {"readonly": True}):
        with pytest.raises(store.StoreError, match="no database yet"):
            store.open_store(tmp_path / "missing.db", **kwargs)
        assert not (tmp_path / "missing.db").exists()


def test_a_database_that_is_not_rkvideos_is_refused_not_changed(tmp_path):
    other = tmp_path / "other.db"
    sql(other, "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(store.StoreError, match=f"{other}: not an rkvideo database"):
        store.open_store(other)
    assert sql(other, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("photos",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]     # no lock file left beside it
    with pytest.raises(store.StoreError, match="not an rkvideo database"):
        store.open_store(other, readonly=True)
    (tmp_path / "notes.db").write_text("not a database at all " * 100)
    with pytest.raises(store.StoreError, match="notes.db: cannot open the database"):
        store.open_store(tmp_path / "notes.db")
    with pytest.raises(store.StoreError, match="unknown database URL scheme 'mysql'"):
        store.open_store("mysql://queue.local/rkvideo")


def test_daemon_lock_survives_other_handles_on_the_lock_file_closing(sqlite_db, tmp_path):
    db = sqlite_db
    """A POSIX lock would vanish when any descriptor of the file closes in the process; flock does not."""
    db.lock_daemon()
    os.close(os.open(f"{db.location}.lock", os.O_RDWR))              # e.g. another store creating a schema
    other = subprocess.run([sys.executable, "-c", "import sys; from rkvideo import store\n"
                            "try:\n    store.open_store(sys.argv[1]).lock_daemon()\n"
                            "except store.StoreError as exc:\n    sys.exit(str(exc))", db.location],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 1 and "another `rkvideo watch` is using this database" in other.stderr
    db.close()                                                  # the lock goes with the store
    again = store.open_store(db.location)
    again.lock_daemon()
    again.close()


def test_job_lifecycle_claim_retry_fail(db):
    first = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    second = db.put("/cam/b.mp4", Status.QUEUED, size=20, mtime=2.0, digest="h2")
    job = db.claim("board-1")
    assert (job.id, job.status, job.attempts) == (first, Status.RUNNING, 1)
    db.fail(first, "boom", retry_in=3600)               # backing off: the next job goes first
    assert db.claim("board-1").id == second
    assert db.claim("board-1") is None
    assert db.job(first).status == Status.QUEUED
    assert db.job(first).not_before > datetime.now(timezone.utc).isoformat()
    db.fail(second, "bad file")
    assert (db.job(second).status, db.job(second).error) == (Status.FAILED, "bad file")
    assert db.retry() == 1                               # default: every failed job
    assert (db.job(second).status, db.job(second).attempts, db.job(second).error) == (Status.QUEUED, 0, None)


def test_claim_records_the_worker(db):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    claimed = db.claim("door-board:1234")
    assert claimed.worker == "door-board:1234" and db.job(job_id).worker == "door-board:1234"
    assert sql(db.location, "SELECT worker, status FROM jobs") == [("door-board:1234", "running")]
    assert claimed == db.job(job_id)                     # the claimed job is the row as stored


def claim_and_die(target, worker: str):
    """A daemon that claims a job and dies: its connection closes (on PostgreSQL, with its session lock)."""
    with store.open_store(target) as other:
        return other.claim(worker)


def recover_gone(db, worker: str, max_attempts: int):
    """``recover`` once it finds the dead worker's job: a server ends a closed session a moment later."""
    end = time.monotonic() + 10
    while True:
        requeued, failed = db.recover(worker, max_attempts)
        if requeued or failed or time.monotonic() > end:
            return requeued, failed
        time.sleep(0.01)


def test_recover_requeues_then_fails_a_job_whose_worker_keeps_dying(db, target):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    claim_and_die(target, "board:1:a")
    assert [j.id for j in recover_gone(db, "board:2:b", max_attempts=2)[0]] == [job_id]
    assert db.job(job_id).status == Status.QUEUED
    claim_and_die(target, "board:2:b")
    requeued, failed = recover_gone(db, "board:3:c", max_attempts=2)
    assert requeued == [] and [j.id for j in failed] == [job_id]
    assert db.job(job_id).status == Status.FAILED
    assert "stopped during each of 2 attempts" in db.job(job_id).error


def test_recover_never_touches_a_live_workers_job(db, target):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    with store.open_store(target) as live:
        live.claim("board:1:a")
        assert db.recover("board:1:a", max_attempts=3) == ([], [])      # the caller's own job
        requeued, _ = db.recover("board:2:b", max_attempts=3)
        if on_postgres(db):
            # Its session holds the job's lock: alive, whichever board asks.
            assert requeued == [] and db.job(job_id).status == Status.RUNNING
        else:
            # One daemon per database (lock_daemon), one worker id per process: another id is gone.
            assert [j.id for j in requeued] == [job_id]


def test_workers_report_show_their_job_and_can_be_asked_to_drain(db, target):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    assert db.report("door:12:ab", "starting") is False
    assert db.report("door:12:ab", "running") is False
    db.report("yard:7:cd", "running")
    with store.open_store(target) as worker:
        worker.claim("door:12:ab")
        shown = {w["id"]: w for w in db.workers()}
        assert (shown["door:12:ab"]["state"], shown["door:12:ab"]["job_id"], shown["door:12:ab"]["path"]) == (
            "running", job_id, "/cam/a.mp4")
        assert shown["yard:7:cd"]["job_id"] is None and shown["yard:7:cd"]["drain"] is False
        assert db.drain("door") == ["door:12:ab"]               # by host: every worker of that host
        assert db.drain("yard:7:cd") == ["yard:7:cd"]           # by id
        assert db.drain("door:1") == []                         # never by a prefix of an id
        assert db.report("door:12:ab", "draining") is True
    db.report("yard:7:cd", "stopped")
    assert db.drain("yard") == []                               # a stopped worker is not asked


def test_requeue_after_a_clean_stop_does_not_count_the_attempt(db):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    db.claim("board-1")
    db.requeue(job_id)
    assert (db.job(job_id).status, db.job(job_id).attempts) == (Status.QUEUED, 0)


def test_finish_is_one_transaction(db):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    job = db.claim("board-1")
    seen = []

    def power_cut():
        # Inside the transaction: this connection sees both writes, nothing is committed yet.
        seen.append((db.job(job_id).status, len(db.descriptions(job_id))))
        seen.append(sql(db.location, "SELECT status FROM jobs"))
        raise OSError("power cut")

    with pytest.raises(OSError, match="power cut"):
        db.finish(job, result(), before_commit=power_cut)
    assert seen == [(Status.DONE, 1), [("running",)]]
    # The description inserted before the failure was rolled back with it.
    assert db.descriptions(job_id) == [] and db.job(job_id).status == Status.RUNNING
    db.finish(job, result())
    assert db.job(job_id).status == Status.DONE and len(db.descriptions(job_id)) == 1


def test_descriptions_keep_every_field_as_plain_json(db):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    db.finish(db.claim("board-1"), result(), timings={"describe": 2.0})
    (row,) = db.descriptions(job_id)
    assert row["frames"] == [{"index": 0, "pts": 100, "seconds": 0.5, "source": "/cam/a.mp4"}]
    assert row["timings"] == {"generate": 1.5, "describe": 2.0}
    assert (row["model"], row["vision_model"], row["llm_model"]) == ("qwen2-vl-2b", "enc.rknn", "llm.rkllm")
    assert (row["prompt_tokens"], row["vision_tokens"], row["new_tokens"]) == (300, 198, 12)
    assert (row["hash"], row["path"], row["source"], row["kind"]) == ("h1", "/cam/a.mp4", "watch", "video")
    (raw,) = sql(db.location, "SELECT frames, notes FROM descriptions")
    assert json.loads(raw[1]) == ["a note"] and isinstance(raw[0], str)


def test_token_counts_may_come_as_a_record_with_as_dict(db):
    """pipeline.Result carries typed Tokens; the store reads them through as_dict()."""
    tokens = SimpleNamespace(as_dict=lambda: {"prompt": 7, "vision": 5, "new": 3})
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    db.finish(db.claim("board-1"), SimpleNamespace(**{**vars(result()), "tokens": tokens}))
    (row,) = db.descriptions(job_id)
    assert (row["prompt_tokens"], row["vision_tokens"], row["new_tokens"]) == (7, 5, 3)


def test_jobs_as_dicts_are_the_rows_of_the_jobs_table(db):
    db.put("/cam/a.mp4", Status.QUEUED, root="/cam", size=10, mtime=1.0, digest="h1")
    db.finish(db.claim("board-1"), result())
    db.put("/cam/b.mp4", Status.FAILED, root="/cam", error="empty file (0 bytes)")
    # SELECT * on SQLite; PostgreSQL has its generated key column besides.
    rows = [dict(zip(store.COLUMNS, r)) for r in sql(db.location, f"SELECT {', '.join(store.COLUMNS)} FROM jobs "
                                                                   "ORDER BY id")]
    if not on_postgres(db):      # on SQLite, these are every column, in order
        assert [tuple(r.values()) for r in rows] == sql(db.location, "SELECT * FROM jobs ORDER BY id")
    listed = [j.as_dict() for j in db.jobs()]
    assert [{k: v for k, v in j.items() if k != "descriptions"} for j in listed] == rows
    assert list(listed[0]) == list(rows[0]) + ["descriptions"]        # the columns' order, count last
    assert [j["descriptions"] for j in listed] == [1, 0]
    assert "descriptions" not in db.job(1).as_dict()                   # counted by jobs() only
    assert [j.path for j in db.jobs(Status.FAILED)] == ["/cam/b.mp4"]


def test_drop_keeps_jobs_that_have_descriptions(db):
    kept = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    db.finish(db.claim("board-1"), result())
    gone = db.put("/cam/b.mp4", Status.QUEUED, size=20, mtime=2.0, digest="h2")
    assert db.drop(kept) == ("kept", None) and db.drop(gone) == ("dropped", None)
    assert db.job(kept) is not None and db.job(gone) is None


def test_a_described_job_queued_again_goes_back_to_done_when_its_file_is_deleted(db):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    db.finish(db.claim("board-1"), result())
    for running in (False, True):               # deleted while queued again, or while being described
        assert db.retry([job_id]) == 1
        if running:
            db.claim("board-1")
        assert db.drop(job_id, running=running) == ("kept", None)
        job = db.job(job_id)
        assert (job.status, job.not_before, job.started_at) == (Status.DONE, None, None)
        assert "earlier description is kept" in job.error and len(db.descriptions(job_id)) == 1


def _copy(db, path, original):
    return db.put(path, Status.SKIPPED, size=10, mtime=1.0, digest=db.job(original).hash,
                  error=store.same_content(db.job(original)), duplicate_of=original)


def test_dropping_an_undescribed_original_queues_its_oldest_copy(db):
    original = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    first, second = _copy(db, "/cam/a-copy.mp4", original), _copy(db, "/cam/a-copy2.mp4", original)
    what, promoted = db.drop(original)
    assert (what, promoted.id, promoted.path) == ("dropped", first, "/cam/a-copy.mp4")
    job = db.job(first)
    assert (job.status, job.duplicate_of, job.error, job.attempts) == (Status.QUEUED, None, None, 0)
    # The other copy now points at the one that will be described.
    other = db.job(second)
    assert (other.status, other.duplicate_of) == (Status.SKIPPED, first)
    assert other.error == f"same content as /cam/a-copy.mp4 (job {first})"
    assert db.claim("board-1").id == first


def test_a_described_original_keeps_its_copies_skipped(db):
    original = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    db.finish(db.claim("board-1"), result())
    copy = _copy(db, "/cam/a-copy.mp4", original)
    assert db.drop(original) == ("kept", None)
    assert (db.job(copy).status, db.job(copy).duplicate_of) == (Status.SKIPPED, original)
    # New content at a done path: the old content is described, the copy stays skipped too.
    db.put("/cam/a.mp4", Status.QUEUED, size=11, mtime=2.0, digest="h2")
    assert db.job(copy).status == Status.SKIPPED


def test_new_content_at_an_undescribed_original_queues_its_copy(db):
    original = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    copy = _copy(db, "/cam/a-copy.mp4", original)
    db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")      # same content: nothing moves
    assert db.job(copy).status == Status.SKIPPED
    db.put("/cam/a.mp4", Status.QUEUED, size=12, mtime=3.0, digest="h3")      # rewritten before it was described
    assert (db.job(copy).status, db.job(copy).duplicate_of) == (Status.QUEUED, None)


def test_search_ranks_and_marks_the_word(db):
    texts = {"/cam/a.mp4": "A red car parks. The red car leaves.", "/cam/b.mp4": "A dog sleeps on a red mat.",
             "/cam/c.mp4": "Nobody is there."}
    for path, text in texts.items():
        db.put(path, Status.QUEUED, size=1, mtime=1.0, digest=path)
        db.finish(db.claim("board-1"), result(text, path=path))
    hits = db.search("red car")
    assert [h["path"] for h in hits] == ["/cam/a.mp4"]
    assert "[red] [car]" in hits[0]["snippet"]
    assert [h["path"] for h in db.search("red")] == ["/cam/a.mp4", "/cam/b.mp4"]     # two hits rank first
    assert db.search('NOT "') == []                      # quoted: operators and stray quotes are words
    assert {h["path"] for h in db.search("dog OR nobody", raw=True)} == {"/cam/b.mp4", "/cam/c.mp4"}
    if on_postgres(db):
        assert db.search('"unbalanced', raw=True) == []     # web-search syntax has no errors
        assert [h["path"] for h in db.search("cars")] == ["/cam/a.mp4"]      # English stemming
    else:
        with pytest.raises(store.StoreError, match="FTS5"):
            db.search('"unbalanced', raw=True)


CJK = {"/cam/a.mp4": "一辆红色的汽车停在门口。", "/cam/b.mp4": "有人在院子里走动，汽车开走了。又一辆汽车。",
       "/cam/c.mp4": "The red car stops at the gate.", "/cam/d.mp4": "ゴミ収集車が来た。",
       "/cam/e.mp4": "รถสีแดงจอดอยู่หน้าบ้าน"}


def describe_all(s, texts: dict) -> None:
    for path, text in texts.items():
        s.put(path, Status.QUEUED, size=1, mtime=1.0, digest=path)
        s.finish(s.claim("board-1"), result(text, path=path))


def test_a_word_inside_a_run_of_text_without_spaces_is_found(db):
    """unicode61 keeps a run of Chinese, Japanese or Thai as one word; such words are found as substrings."""
    describe_all(db, CJK)

    def paths(query):
        return [h["path"] for h in db.search(query)]

    assert sorted(paths("汽车")) == ["/cam/a.mp4", "/cam/b.mp4"]           # two characters: checked by instr
    [hit] = db.search("院子里")                                               # three: found by the trigram index
    assert hit["path"] == "/cam/b.mp4" and "[院子里]" in hit["snippet"]
    assert set(hit) == set(db.search("red car")[0])                           # the same keys as a word hit
    assert paths("汽车 门口") == ["/cam/a.mp4"]                               # every word must occur
    assert paths("収集車") == ["/cam/d.mp4"] and paths("สีแดง") == ["/cam/e.mp4"]
    assert paths("汽车 gate") == [] and paths("红色 REd") == []
    assert paths("红色的汽车 一辆") == ["/cam/a.mp4"]
    # Words in spaced scripts keep unicode61 words and ranking.
    assert paths("red car") == ["/cam/c.mp4"] and paths("ar") == []


def test_the_trigram_index_is_built_from_the_rows_stored_before_it(tmp_path):
    path = tmp_path / "rkvideo.db"
    with store.open_store(path) as s:
        describe_all(s, CJK)
    # The database as the rkvideo before this step left it: no trigram index, the step not applied.
    conn = sqlite3.connect(path, isolation_level=None)
    for trigger in ("ai", "ad", "au"):
        conn.execute(f"DROP TRIGGER descriptions_fts_trigram_{trigger}")
    conn.execute("DROP TABLE descriptions_fts_trigram")
    conn.execute("DELETE FROM _sqlite_migrations WHERE name = '0101-i9-descriptions-trigram'")
    conn.close()
    with store.open_store(path) as s:
        assert [h["path"] for h in s.search("院子里")] == ["/cam/b.mp4"]
    assert sql(path, "SELECT rowid FROM descriptions_fts_trigram WHERE descriptions_fts_trigram MATCH '院子里'") \
        == [(2,)]
    assert sql(path, "SELECT count(*) FROM descriptions_fts_trigram WHERE descriptions_fts_trigram MATCH 'red'") \
        == [(1,)]


def test_move_folder_moves_only_that_folder(db):
    db.put("/cam/day/a.mp4", Status.QUEUED)
    db.put("/cam/day2/b.mp4", Status.QUEUED)
    assert db.move_folder("/cam/day", "/cam/archive") == 1
    assert db.job_at("/cam/archive/a.mp4") and db.job_at("/cam/day2/b.mp4")


def test_jobs_record_their_watched_folder_and_the_path_below_it(target):
    # SQLite (one board) records the folder; PostgreSQL (shared) its name, which the boards agree on.
    db = store.open_store(target, roots={"cams": "/srv/cams"})
    named = (lambda folder: folder.rsplit("/", 1)[1]) if on_postgres(db) else (lambda folder: folder)
    job_id = db.put("/srv/cams/door/0800.mp4", Status.QUEUED, root="/srv/cams/")
    job = db.job(job_id)
    assert (job.path, job.root, job.relpath) == ("/srv/cams/door/0800.mp4", named("/srv/cams"), "door/0800.mp4")
    db.put("/srv/cams/door/0800.mp4", Status.QUEUED, digest="new")         # no root given: the old one stays
    assert db.job(job_id).relpath == "door/0800.mp4"
    db.move(job_id, "/srv/cams/door/0801.mp4")                             # renamed inside the folder
    assert (db.job(job_id).root, db.job(job_id).relpath) == (named("/srv/cams"), "door/0801.mp4")
    db.move_folder("/srv/cams/door", "/srv/cams/front")
    assert db.job(job_id).relpath == "front/0801.mp4"
    db.move_folder("/srv/cams/front", "/srv/yard/front", root="/srv/yard")  # into another watched folder
    assert (db.job(job_id).root, db.job(job_id).relpath) == (named("/srv/yard"), "front/0801.mp4")
    assert db.job(job_id).path == "/srv/yard/front/0801.mp4"
    db.move(job_id, "/tmp/0801.mp4")                                       # out of every watched folder
    assert (db.job(job_id).root, db.job(job_id).relpath) == (None, None)
    outside = db.put("/elsewhere/a.mp4", Status.QUEUED, root="/srv/cams")   # not in that folder: no root
    assert (db.job(outside).root, db.job(outside).relpath) == (None, None)
    db.close()


def test_save_result_adds_a_description_per_call(tmp_path, target):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"not really a video, but a file with content")
    path = target
    with store.open_store(path) as s:
        s.save_result(result(path=str(clip)))
    with store.open_store(path) as s:
        s.save_result(result("Someone waves.", prompt="Who is there?", path=str(clip)))
    with store.open_store(path) as s:
        job = s.job_at(str(clip))
        assert job.status == Status.DONE and job.hash == store.fingerprint(clip)
        assert [d["prompt"] for d in s.descriptions(job.id)] == ["Describe what happens in this video.",
                                                                 "Who is there?"]
        assert [d["source"] for d in s.descriptions(job.id)] == ["describe", "describe"]


DISK_FULL = {  # a trigger that fails every description insert, as a full disk would
    "sqlite": ["CREATE TRIGGER full BEFORE INSERT ON descriptions BEGIN SELECT RAISE(ABORT, 'database or disk is "
               "full'); END"],
    "postgres": ["CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                 "'database or disk is full'; END $$",
                 "CREATE TRIGGER disk_full BEFORE INSERT ON descriptions FOR EACH ROW EXECUTE FUNCTION disk_full()"]}


def test_save_result_that_cannot_insert_leaves_no_done_job(tmp_path, target):
    """A job must never be done without a description: the daemon would skip its file forever."""
    clip, queued = tmp_path / "a.mp4", tmp_path / "b.mp4"
    clip.write_bytes(b"a file with content")
    queued.write_bytes(b"another file with content")
    path = target
    with store.open_store(path) as s:
        s.put(str(queued), Status.QUEUED, size=1, mtime=1.0, digest="old content")
        backend = "postgres" if on_postgres(s) else "sqlite"
    # The disk fills up just when the description is written.
    for statement in DISK_FULL[backend]:
        sql(path, statement)
    for target in (clip, queued):
        with store.open_store(path) as s, pytest.raises(store.StoreError, match="disk is full") as caught:
            s.save_result(result(path=str(target)))
        assert str(path) in str(caught.value) and str(target) in str(caught.value)
    sql(path, "DROP TRIGGER disk_full ON descriptions" if backend == "postgres" else "DROP TRIGGER full")
    with store.open_store(path) as s:
        assert s.job_at(str(clip)) is None
        assert (s.job_at(str(queued)).status, s.job_at(str(queued)).hash) == (Status.QUEUED, "old content")
    assert sql(path, "SELECT count(*) FROM descriptions") == [(0,)]


# ---------------------------------------------------------------- the database file itself

HOLD_LOCK = ("import sqlite3, sys\nconn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "conn.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\nsys.stdin.readline()\n")


def test_a_write_waits_for_another_process_and_a_command_gives_up(sqlite_db):
    db = sqlite_db
    """SQLite's own busy timeout is short; the store looks up between tries (``on_busy``), which may
    wait for ever (the daemon) or give up (commands, after BUSY_LIMIT)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, db.location], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waits = []

        def on_busy(waited):
            waits.append(waited)
            if len(waits) == 6:
                holder.stdin.write("\n")        # the other process commits and ends
                holder.stdin.flush()

        db.on_busy = on_busy
        job_id = db.put("/cam/a.mp4", Status.QUEUED)
        assert db.job(job_id).path == "/cam/a.mp4"
        assert len(waits) >= 6 and waits == sorted(waits) and waits[5] >= 5 * store.BUSY_SLICE * 0.9
    finally:
        holder.kill()
        holder.wait()

    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, db.location], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # Commands give up (after BUSY_LIMIT, 30 s; here after half a second).
        with store.open_store(db.location, on_busy=store.dbfile.give_up_after(0.5, db.location)) as command:
            with pytest.raises(store.StoreError, match=r"locked by another process \(waited 0.5s\); try again"):
                command.put("/cam/b.mp4", Status.QUEUED)
    finally:
        holder.kill()
        holder.wait()
    assert [j.path for j in db.jobs()] == ["/cam/a.mp4"]


def test_a_database_deleted_or_replaced_under_the_store_takes_no_more_writes(tmp_path):
    path = tmp_path / "rkvideo.db"
    for how in ("deleted", "replaced"):
        s = store.open_store(path)
        s.put("/cam/a.mp4", Status.QUEUED)
        if how == "deleted":
            os.unlink(path)
        else:
            shutil.copyfile(path, tmp_path / "copy.db")
            os.replace(tmp_path / "copy.db", path)
        with pytest.raises(store.StoreError, match=f"the database file was {how} while rkvideo had it open"):
            s.put("/cam/b.mp4", Status.QUEUED)
        s.close()
    assert [r[0] for r in sql(path, "SELECT path FROM jobs")] == ["/cam/a.mp4"]    # the copy, as it was


def test_the_store_names_its_files_by_their_real_path(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    with store.open_store(tmp_path / "link" / "rk.db") as s:
        real = str(tmp_path / "data" / "rk.db")
        assert s.files() == [real, real + "-wal", real + "-shm", real + "-journal", real + ".lock",
                             real + ".thumbnails"]
        s.lock_daemon()
        assert (tmp_path / "data" / "rk.db.lock").exists()


def test_missing_sidecars_are_kept_with_the_description_until_written(db):
    missing = [store.MissingSidecar(job_id=0, kind=kind, path=f"/cam/a.mp4.{kind}", recording="/cam/a.mp4",
                                    text=f"{kind} text", error="No space left on device") for kind in ("json", "vtt")]
    db.put("/cam/a.mp4", Status.QUEUED)
    job = db.claim("board-1")
    db.finish(job, result(), missing_sidecars=missing)
    kept = db.missing_sidecars()
    full = "No space left on device"
    assert [(m.job_id, m.kind, m.text, m.error) for m in kept] == [(job.id, "json", "json text", full),
                                                                   (job.id, "vtt", "vtt text", full)]
    assert db.job(job.id).status == Status.DONE
    db.sidecar_failed(job.id, "json", "Is a directory")
    db.sidecar_written(job.id, "vtt")
    assert [(m.kind, m.error) for m in db.missing_sidecars([job.id])] == [("json", "Is a directory")]
    assert db.missing_sidecars([job.id + 1]) == []
    db.retry([job.id])
    db.finish(db.claim("board-1"), result())                       # described again: its sidecars were written
    assert db.missing_sidecars() == []


# ---------------------------------------------------------------- migrations

# The schema as the code before migrations created it (schema_version 1), statement for statement.
OLD_SCHEMA = """
PRAGMA journal_mode = wal;
CREATE TABLE "jobs" (
   "id" INTEGER PRIMARY KEY, "path" TEXT NOT NULL, "size" INTEGER, "mtime" REAL, "hash" TEXT,
   "duration" REAL, "status" TEXT NOT NULL, "attempts" INTEGER NOT NULL DEFAULT 0, "error" TEXT,
   "duplicate_of" INTEGER, "not_before" TEXT, "created_at" TEXT, "updated_at" TEXT, "started_at" TEXT,
   "finished_at" TEXT);
CREATE UNIQUE INDEX "idx_jobs_path" ON "jobs" ("path");
CREATE INDEX "idx_jobs_status_id" ON "jobs" ("status", "id");
CREATE INDEX "idx_jobs_hash" ON "jobs" ("hash");
CREATE TABLE "descriptions" (
   "id" INTEGER PRIMARY KEY, "job_id" INTEGER NOT NULL REFERENCES "jobs"("id"), "path" TEXT, "hash" TEXT,
   "kind" TEXT, "inputs" TEXT, "text" TEXT, "model" TEXT, "vision_model" TEXT, "llm_model" TEXT,
   "prompt" TEXT, "frames" TEXT, "frame_count" INTEGER, "prompt_tokens" INTEGER, "vision_tokens" INTEGER,
   "new_tokens" INTEGER, "timings" TEXT, "notes" TEXT, "source" TEXT, "created_at" TEXT);
CREATE INDEX "idx_descriptions_job_id" ON "descriptions" ("job_id");
CREATE VIRTUAL TABLE "descriptions_fts" USING FTS5 ("text", content="descriptions");
CREATE TRIGGER "descriptions_ai" AFTER INSERT ON "descriptions" BEGIN
  INSERT INTO "descriptions_fts" (rowid, "text") VALUES (new.rowid, new."text");
END;
CREATE TRIGGER "descriptions_ad" AFTER DELETE ON "descriptions" BEGIN
  INSERT INTO "descriptions_fts" ("descriptions_fts", rowid, "text") VALUES('delete', old.rowid, old."text");
END;
CREATE TRIGGER "descriptions_au" AFTER UPDATE ON "descriptions" BEGIN
  INSERT INTO "descriptions_fts" ("descriptions_fts", rowid, "text") VALUES('delete', old.rowid, old."text");
  INSERT INTO "descriptions_fts" (rowid, "text") VALUES (new.rowid, new."text");
END;
CREATE TABLE "schema_version" ("version" INTEGER);
INSERT INTO schema_version (version) VALUES (1);
INSERT INTO jobs (path, size, mtime, hash, status, attempts, created_at, updated_at, finished_at)
  VALUES ('/srv/cams/door/0800.mp4', 10, 1.5, 'h1', 'done', 1, '2024-05-01T08:00:00.000000+00:00',
          '2024-05-01T08:01:00.000000+00:00', '2024-05-01T08:01:00.000000+00:00');
INSERT INTO jobs (path, size, mtime, hash, status, attempts, created_at, updated_at)
  VALUES ('/srv/cams/door/0900.mp4', 20, 2.5, 'h2', 'queued', 0, '2024-05-01T09:00:00.000000+00:00',
          '2024-05-01T09:00:00.000000+00:00');
INSERT INTO descriptions (job_id, path, hash, kind, inputs, text, model, frames, frame_count, timings, notes,
                          source, created_at)
  VALUES (1, '/srv/cams/door/0800.mp4', 'h1', 'video', '["/srv/cams/door/0800.mp4"]',
          'A parcel is left at the door.', 'qwen2-vl-2b', '[]', 0, '{}', '[]', 'watch',
          '2024-05-01T08:01:00.000000+00:00');
"""


def old_database(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    return path


def test_a_database_made_before_migrations_opens_keeps_its_rows_and_gains_the_new_columns(tmp_path):
    path = old_database(tmp_path / "rkvideo.db")
    before = sql(path, "SELECT * FROM jobs ORDER BY id")
    with store.open_store(path) as s:
        jobs = s.jobs()
        assert [(j.path, j.status, j.descriptions) for j in jobs] == [
            ("/srv/cams/door/0800.mp4", Status.DONE, 1), ("/srv/cams/door/0900.mp4", Status.QUEUED, 0)]
        assert (jobs[0].root, jobs[0].relpath, jobs[0].worker) == (None, None, None)
        assert [h["path"] for h in s.search("parcel")] == ["/srv/cams/door/0800.mp4"]
        s.finish(s.claim("board-1"), result("A cat walks by.", path="/srv/cams/door/0900.mp4"))
        assert [h["path"] for h in s.search("cat")] == ["/srv/cams/door/0900.mp4"]
    after = sql(path, "SELECT * FROM jobs ORDER BY id")
    assert after[0] == before[0] + (None, None, None)         # old columns unchanged, new ones last
    assert sql(path, "SELECT version FROM schema_version") == [(1,)]     # older rkvideo still opens it
    applied = [name for (name,) in sql(path, "SELECT name FROM _sqlite_migrations ORDER BY id")]
    store.open_store(tmp_path / "new.db").close()
    steps = [name for (name,) in sql(tmp_path / "new.db", "SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert applied == steps and len(steps) >= 2 and steps[0].startswith("0001") and steps[1].startswith("0002")
    assert "0100-i9-missing-sidecars" in steps and "0101-i9-descriptions-trigram" in steps
    store.open_store(path).close()                            # opening again applies nothing
    assert len(sql(path, "SELECT name FROM _sqlite_migrations")) == len(steps)
    assert sql(path, "SELECT count(*) FROM schema_version") == [(1,)]


def test_a_new_database_and_a_migrated_one_have_the_same_schema(tmp_path):
    store.open_store(tmp_path / "new.db").close()
    store.open_store(old_database(tmp_path / "old.db")).close()

    def shape(path):
        tables = [name for (name,) in sql(path, "SELECT name FROM sqlite_master WHERE type IN ('table', 'index', "
                                                "'trigger') ORDER BY name")]
        return tables, {t: sql(path, f"PRAGMA table_xinfo({t})") for t in ("jobs", "descriptions")}

    assert shape(tmp_path / "new.db") == shape(tmp_path / "old.db")


def test_a_read_only_open_reads_an_old_database_without_migrating_it(tmp_path):
    path = old_database(tmp_path / "rkvideo.db")
    with store.open_store(path, readonly=True) as s:
        assert [(j.path, j.root, j.relpath) for j in s.jobs()] == [
            ("/srv/cams/door/0800.mp4", None, None), ("/srv/cams/door/0900.mp4", None, None)]
        assert s.job_at("/srv/cams/door/0800.mp4").as_dict()["root"] is None
    assert "root" not in [r[1] for r in sql(path, "PRAGMA table_info(jobs)")]


# ---------------------------------------------------------------- read-only opens

def test_a_read_only_store_never_writes(db):
    job_id = db.put("/cam/a.mp4", Status.QUEUED, size=10, mtime=1.0, digest="h1")
    with store.open_store(db.location, readonly=True) as reader:
        assert reader.job(job_id).path == "/cam/a.mp4"
        with pytest.raises(store.StoreError, match="readonly|read-only"):
            reader.put("/cam/b.mp4", Status.QUEUED)
        db.put("/cam/c.mp4", Status.QUEUED)             # the writer goes on; the reader sees its commits
        assert [j.path for j in reader.jobs()] == ["/cam/a.mp4", "/cam/c.mp4"]


def read_as_other_user(folder: str, path: str) -> dict:
    """Open ``path`` read-only as a user who may read it but write neither it nor its folder."""
    import rkvideo.store.sqlite  # noqa: F401 - loaded before the child drops privileges

    def read() -> dict:
        try:
            with store.open_store(path, readonly=True) as s:
                return {"paths": [j.path for j in s.jobs()], "hits": len(s.search("car"))}
        except store.StoreError as exc:
            return {"error": str(exc)}

    return users.as_reader(folder, path, read)


def test_a_user_who_cannot_write_reads_with_and_without_a_daemon_running(shared_folder):
    path = os.path.join(shared_folder, "rkvideo.db")
    with store.open_store(path) as s:
        s.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")
        s.finish(s.claim("board-1"), result("A red car."))
    os.chmod(shared_folder, 0o755)
    # No daemon: no -wal file, the reader cannot create one; the file alone is the database.
    assert not os.path.exists(path + "-wal")
    assert read_as_other_user(shared_folder, path) == {"paths": ["/cam/a.mp4"], "hits": 1}
    # A daemon has it open: the reader goes through its -wal and -shm files and sees its commits.
    with store.open_store(path) as daemon:
        daemon.put("/cam/b.mp4", Status.QUEUED)
        assert os.path.exists(path + "-wal") and os.path.exists(path + "-shm")
        assert read_as_other_user(shared_folder, path) == {"paths": ["/cam/a.mp4", "/cam/b.mp4"], "hits": 1}
    assert sql(path, "SELECT count(*) FROM jobs") == [(2,)]


# ---------------------------------------------------------------- fingerprints

def _changed(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    copy = path.with_name(f"changed-{offset}")
    copy.write_bytes(bytes(data))
    return copy


def test_fingerprint_of_small_files_covers_every_byte(tmp_path):
    path = tmp_path / "small.mp4"
    path.write_bytes(os.urandom(300_000))
    digest = store.fingerprint(path)
    assert store.fingerprint(_changed(path, 150_000)) != digest
    (tmp_path / "same.mp4").write_bytes(path.read_bytes())
    assert store.fingerprint(tmp_path / "same.mp4") == digest


def test_fingerprint_of_large_files_samples_head_tail_and_spread(tmp_path):
    size = 9 * store.BLOCK + 12345
    path = tmp_path / "large.mp4"
    path.write_bytes(os.urandom(size))
    digest = store.fingerprint(path)
    span = size - 2 * store.BLOCK - store.PROBE
    for offset in (10, size - 10, store.BLOCK + span * 7 // (store.PROBES - 1) + 5):
        assert store.fingerprint(_changed(path, offset)) != digest
    # The documented limit: a same-size change outside every sampled range is not seen.
    unsampled = store.BLOCK + store.PROBE + 1000
    assert store.fingerprint(_changed(path, unsampled)) == digest
    with open(path, "ab") as f:
        f.write(b"x")
    assert store.fingerprint(path) != digest              # the size is part of the hash


def test_timings_text_is_the_one_format_for_logs_show_and_describe():
    assert store.timings_text({"encode": 1.2, "generate": 3.456}) == "encode 1.20s, generate 3.46s"
    assert store.timings_text({}) == ""


def test_timeline_events_are_stored_with_their_description_and_searchable(tmp_path):
    """Migration 0003 adds events; finish() stores a result's events in its transaction."""
    from rkvideo.pipeline import Event, Kind, Result, Timings, Tokens
    clip = tmp_path / "drive.mp4"
    clip.write_bytes(b"x" * 100)
    db = store.open_store(tmp_path / "rk.db")
    try:
        db.put(str(clip), Status.QUEUED, size=100, mtime=clip.stat().st_mtime, digest="d")
        job = db.claim("w")
        events = [Event(30.0, 42.5, "a person walks to the door", [{"index": 0, "seconds": 31.0}], 0.8),
                  Event(75.0, 100.0, "a red car parks", [], 0.5)]
        result = Result([str(clip)], Kind.VIDEO, [], "p", {"profile": "x"}, Tokens(1, 2, 3), False,
                        Timings(), "Two visits.", events=events)
        description = db.finish(job, result)
        stored = db.events(description)
        assert [(e["start"], e["end"], e["text"], e["score"]) for e in stored] == [
            (30.0, 42.5, "a person walks to the door", 0.8), (75.0, 100.0, "a red car parks", 0.5)]
        assert stored[0]["frames"] == [{"index": 0, "seconds": 31.0}]
        assert result.as_json()["events"][1] == {"start": 75.0, "end": 100.0, "text": "a red car parks",
                                                 "frames": [], "score": 0.5}
    finally:
        db.close()
    with sqlite3.connect(tmp_path / "rk.db") as conn:
        hits = conn.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH 'parks'").fetchall()
    assert len(hits) == 1


def test_moments_kept_during_a_timeline_are_attached_at_finish_and_forgotten_with_new_content(tmp_path):
    """A crash loses at most the moment being described: finished ones are kept (description_id NULL),
    finish() attaches the full list in its transaction, and new content at the path forgets them."""
    from rkvideo.pipeline import Event, Kind, Result, Timings, Tokens
    clip = tmp_path / "drive.mp4"
    clip.write_bytes(b"x" * 100)
    db = store.open_store(tmp_path / "rk.db")
    try:
        db.put(str(clip), Status.QUEUED, size=100, mtime=1.0, digest="d")
        job = db.claim("w")
        first = Event(3.0, 9.0, "a cyclist rides past", [{"index": 0, "seconds": 3.0}], 2.5)
        db.keep_event(job.id, first)
        assert [(e["start"], e["end"], e["text"], e["frames"]) for e in db.kept_events(job.id)] == [
            (3.0, 9.0, "a cyclist rides past", [{"index": 0, "seconds": 3.0}])]
        assert db.search_events("cyclist") == []          # not part of a description yet
        second = Event(40.0, 55.0, "a van parks", [], 9.0)
        result = Result([str(clip)], Kind.VIDEO, [], "p", {"profile": "x"}, Tokens(1, 2, 3), False, Timings(),
                        "Two visits.", events=[first, second])
        description = db.finish(job, result)
        assert db.kept_events(job.id) == []
        assert [e["text"] for e in db.events(description)] == ["a cyclist rides past", "a van parks"]
        [hit] = db.search_events("cyclist")
        assert (hit["path"], hit["start"], hit["end"], hit["description_id"]) == (str(clip), 3.0, 9.0, description)
        assert "[cyclist]" in hit["snippet"]
        # Kept moments of a recording whose content then changes are never resumed.
        db.put(str(clip), Status.QUEUED, size=100, mtime=2.0, digest="d")
        job = db.claim("w")
        db.keep_event(job.id, first)
        db.put(str(clip), Status.QUEUED, size=120, mtime=3.0, digest="new")
        assert db.kept_events(job.id) == []
    finally:
        db.close()


def test_a_job_with_kept_moments_can_be_dropped(target):
    from rkvideo.pipeline import Event
    db = store.open_store(target)
    try:
        job_id = db.put("/cam/gone.mp4", Status.QUEUED, size=1, mtime=1.0, digest="g")
        db.claim("w")
        db.keep_event(job_id, Event(1.0, 2.0, "a dog", [], 1.0))
        assert db.drop(job_id, running=True) == ("dropped", None)
        assert db.job(job_id) is None and sql(target, "SELECT count(*) FROM events") == [(0,)]
    finally:
        db.close()
