"""The PostgreSQL store where it differs from SQLite: several boards, one queue (a real server, see
tests/doubles/postgres.py). What both backends share is tested in test_store.py on both."""
import threading
from types import SimpleNamespace

import pytest
from doubles import daemon
from doubles.postgres import pg_url, postgres  # noqa: F401 - fixtures

from rkvideo import store
from rkvideo.store import Status


def result(path, text="A red car parks."):
    return SimpleNamespace(inputs=[path], kind="video", text=text, prompt="Describe.", frames=[],
                           model={"profile": "qwen2-vl-2b"}, tokens={"new": 4}, timings={}, notes=[])


def backend_of(postgres, job_id: int) -> int:
    """The server process of the session that holds ``job_id``'s claim lock."""
    from rkvideo.store.postgres import JOB_LOCKS
    rows = postgres.sql("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
                        "AND objsubid = 2 AND granted", [JOB_LOCKS, job_id], database=postgres.database_of)
    return rows[0]["pid"] if rows else 0


@pytest.fixture
def url(postgres, pg_url):
    postgres.database_of = pg_url.rsplit("/", 1)[1]
    return pg_url


def test_schema_steps_are_named_and_applied_once_by_boards_opening_together(postgres, url):
    errors = []

    def open_close():
        try:
            store.open_store(url).close()
        except Exception as exc:    # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = postgres.database_of
    steps = [r["name"] for r in postgres.sql("SELECT name FROM rkvideo_migrations ORDER BY name", database=db)]
    assert steps == ["0001-i13-jobs-descriptions-search", "0002-i13-workers",
                     "0003-i13-events-sidecars-thumbnails-outbox"]
    assert postgres.sql("SELECT version FROM schema_version", database=db) == [{"version": store.SCHEMA_VERSION}]
    index = postgres.sql("SELECT indexdef FROM pg_indexes WHERE indexname = 'descriptions_search'", database=db)
    assert "USING gin (search)" in index[0]["indexdef"]


def test_a_database_that_is_not_rkvideos_is_refused_and_a_missing_one_named(postgres, url):
    postgres.sql("CREATE TABLE photos (id integer)", database=postgres.database_of)
    with pytest.raises(store.StoreError, match="not an rkvideo database .*photos"):
        store.open_store(url)
    empty = postgres.database()
    with pytest.raises(store.StoreError, match="no rkvideo database here yet"):
        store.open_store(empty, create=False)
    missing = url.rsplit("/", 1)[0] + "/nosuchdb"
    with pytest.raises(store.StoreError, match="nosuchdb.*cannot connect.*does not exist"):
        store.open_store(missing)
    with pytest.raises(store.StoreError, match=r"postgresql://rkvideo:\*\*\*@"):    # the password never shown
        store.open_store(missing.replace("rkvideo@", "rkvideo:secret@"))


def test_two_boards_claiming_at_once_never_get_the_same_job(url):
    with store.open_store(url) as db:
        for n in range(40):
            db.put(f"/cam/{n:02d}.mp4", Status.QUEUED, size=1, mtime=1.0, digest=f"h{n}")
    taken: dict = {}

    def board(name):
        with store.open_store(url) as s:
            mine = taken.setdefault(name, [])
            while (job := s.claim(name)) is not None:
                mine.append(job.id)
                s.finish(job, result(job.path))

    threads = [threading.Thread(target=board, args=(f"board{n}:1:a",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for mine in taken.values() for i in mine]
    assert sorted(ids) == list(range(1, 41))                 # every job once, none twice
    with store.open_store(url) as db:
        assert all(j.descriptions == 1 and j.attempts == 1 for j in db.jobs())


def test_a_cut_connection_loses_only_that_attempt(postgres, url):
    worker, other = store.open_store(url), store.open_store(url)
    try:
        first = worker.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")
        second = worker.put("/cam/b.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h2")
        job = worker.claim("board:1:a")
        assert other.recover("board:2:b", 3) == ([], [])     # alive: its session holds the claim
        postgres.sql("SELECT pg_terminate_backend(%s, 10000)", [backend_of(postgres, job.id)])
        with pytest.raises(store.LostClaim, match=f"job {first} was given back"):
            worker.finish(job, result(job.path))
        requeued, _ = other.recover("board:2:b", 3)           # the session is gone: so is the claim
        assert [j.id for j in requeued] == [first]
        again = worker.claim("board:1:a")                     # the store connects again by itself
        assert (again.id, again.attempts) == (first, 2)
        worker.finish(again, result(again.path))
        assert worker.claim("board:1:a").id == second         # and goes on with the next job
        assert len(worker.descriptions(first)) == 1 and worker.job(first).status == Status.DONE
    finally:
        worker.close()
        other.close()


def test_a_late_finisher_cannot_commit_over_a_newer_claim(postgres, url):
    late, newer = store.open_store(url), store.open_store(url)
    try:
        job_id = late.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")
        job = late.claim("board:1:a")
        postgres.sql("SELECT pg_terminate_backend(%s, 10000)", [backend_of(postgres, job.id)])
        newer.recover("board:2:b", 3)
        claimed = newer.claim("board:2:b")
        for call in (lambda: late.finish(job, result(job.path)), lambda: late.fail(job.id, "boom", 1),
                     lambda: late.requeue(job.id), lambda: late.drop(job.id, running=True)):
            late.claimed[job.id] = (late.session - 1, "board:1:a")     # as it was before the cut
            with pytest.raises(store.LostClaim):
                call()
        assert (newer.job(job_id).status, newer.job(job_id).worker) == (Status.RUNNING, "board:2:b")
        newer.finish(claimed, result(claimed.path))
        assert len(newer.descriptions(job_id)) == 1
    finally:
        late.close()
        newer.close()


def test_intake_never_waits_for_a_row_another_worker_holds(postgres, url):
    import psycopg
    with store.open_store(url) as db:
        job_id = db.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")
        holder = psycopg.connect(url)
        holder.execute("SELECT * FROM jobs WHERE id = %s FOR UPDATE", [job_id])     # a transaction left open
        answer = []
        scan = threading.Thread(target=lambda: answer.append(
            db.put("/cam/a.mp4", Status.QUEUED, size=2, mtime=2.0, digest="h2")))
        scan.start()
        scan.join(20)
        holder.rollback()
        assert answer == [job_id] and not scan.is_alive()       # returned at once, without waiting
        assert db.job(job_id).hash == "h1"                      # the holder's write stands
        db.put("/cam/a.mp4", Status.QUEUED, size=2, mtime=2.0, digest="h2")
        assert db.job(job_id).hash == "h2"                      # once free, new content is recorded
        holder.close()


def test_concurrent_scans_never_reset_a_queued_running_or_described_job(url):
    with store.open_store(url) as a, store.open_store(url) as b:
        job_id = a.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")
        a.fail(job_id, "runtime hiccup", retry_in=3600)
        assert b.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1") == job_id
        assert a.job(job_id).not_before is not None             # the back-off stands
        a.retry([job_id])
        job = a.claim("board:1:a")
        b.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")
        assert a.job(job_id).status == Status.RUNNING
        a.finish(job, result(job.path))
        b.put("/cam/a.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")          # a late scan
        assert (a.job(job_id).status, a.job(job_id).attempts) == (Status.DONE, 1)
        b.put("/cam/a.mp4", Status.QUEUED, size=5, mtime=5.0, digest="h5")          # new content
        assert (a.job(job_id).status, a.job(job_id).attempts) == (Status.QUEUED, 0)


def test_boards_mounting_the_share_at_different_places_agree_on_a_recording(url):
    board_a = store.open_store(url, roots={"cameras": "/mnt/nas/cameras", "garage": "/mnt/garage"})
    board_b = store.open_store(url, roots={"cameras": "/media/share/cams"})
    plain = store.open_store(url)
    try:
        job_id = board_a.put("/mnt/nas/cameras/door/0800.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h1")
        garage = board_a.put("/mnt/garage/0900.mp4", Status.QUEUED, size=1, mtime=1.0, digest="h2")
        seen = board_b.job_at("/media/share/cams/door/0800.mp4")
        assert (seen.id, seen.root, seen.relpath, seen.path) == (job_id, "cameras", "door/0800.mp4",
                                                                  "/media/share/cams/door/0800.mp4")
        assert board_b.put("/media/share/cams/door/0800.mp4", Status.QUEUED, size=1, mtime=1.0,
                           digest="h1") == job_id                  # the same job, not a second one
        claimed = board_b.claim("b:1:x")
        assert (claimed.id, claimed.path) == (job_id, "/media/share/cams/door/0800.mp4")
        assert board_b.claim("b:1:x") is None                      # the garage is not mounted on board B
        assert board_a.claim("a:1:x").id == garage
        assert [j.path for j in board_b.jobs_under("/media/share/cams/door")] == [claimed.path]
        board_b.finish(claimed, result(claimed.path))
        assert [h["path"] for h in board_a.search("car")] == ["/mnt/nas/cameras/door/0800.mp4"]
        # A machine without the roots shows the path as the board that recorded the job saw it.
        assert plain.job(job_id).path == "/mnt/nas/cameras/door/0800.mp4"
        assert plain.job_at("/mnt/nas/cameras/door/0800.mp4").id == job_id
    finally:
        for s in (board_a, board_b, plain):
            s.close()


def test_search_uses_the_text_search_index_with_web_search_syntax(url):
    with store.open_store(url) as db:
        for n, text in enumerate(["Two dogs chase a red ball.", "A delivery van stops; a man carries boxes.",
                                  "Nobody is there."]):
            db.put(f"/cam/{n}.mp4", Status.QUEUED, size=1, mtime=1.0, digest=f"h{n}")
            db.finish(db.claim("w:1:a"), result(f"/cam/{n}.mp4", text))
        assert [h["path"] for h in db.search("dog")] == ["/cam/0.mp4"]               # stemmed: dogs
        assert [h["path"] for h in db.search("box carry")] == ["/cam/1.mp4"]
        assert "[carries] [boxes]" in db.search("box carry")[0]["snippet"]
        assert [h["path"] for h in db.search("dog -ball", raw=True)] == []
        assert {h["path"] for h in db.search("ball or van", raw=True)} == {"/cam/0.mp4", "/cam/1.mp4"}
        assert [h["path"] for h in db.search('"red ball"', raw=True)] == ["/cam/0.mp4"]


def test_one_board_at_a_time_delivers_a_notification_target(url):
    from rkvideo.store import Outgoing
    with store.open_store(url) as db:
        db.put("/cam/a.mp4", Status.FAILED, error="empty file",
               messages=lambda job: [Outgoing("mqtt://broker:1883", f"m{job}", "{}"),
                                     Outgoing("https://hook", "w", "{}")])
    board_a, board_b = store.open_store(url), store.open_store(url)
    try:
        assert [r["message"] for r in board_a.outbox("mqtt://broker:1883")] == ["m1"]
        assert board_b.outbox("mqtt://broker:1883") == []            # board A's sender has that target
        assert [r["message"] for r in board_b.outbox("https://hook")] == ["w"]      # another target is free
        assert len(board_b.outbox()) == 2                            # listing (rkvideo outbox) sees everything
        board_a.close()                                              # board A stops: board B takes over
        assert daemon.wait_for(lambda: board_b.outbox("mqtt://broker:1883"), what="board B to take the target")
    finally:
        board_a.close()
        board_b.close()


def test_thumbnails_live_in_the_database_and_go_with_their_description(tmp_path, url):
    from doubles import web as helpers
    clip = helpers.clip(tmp_path / "door" / "a.mp4")
    with store.open_store(url) as db:
        job_id, description = helpers.describe(db, clip, helpers.result(clip, "A fox crosses the lawn.",
                                                                        events=[(1.0, 2.0, "A fox.")]))
        shown = db.thumbnails([description])[description]
        assert [t["seq"] for t in shown] == [0, 1, 2] and db.thumbnail(shown[0]["id"]).startswith(b"\xff\xd8")
        assert db.files() == [] and db.thumbnail(2**40) is None
        hits = db.browse("fox", store.Filters())
        assert [(h["kind"], h["path"]) for h in hits] == [("event", str(clip)), ("description", str(clip))]
        assert f"{store.MARK}fox{store.END}" in hits[0]["snippet"].lower()
        assert db.forget(description) and db.thumbnail(shown[0]["id"]) is None and db.events(description) == []
        assert "rkvideo forget" in db.job(job_id).error


def test_moments_kept_during_a_timeline_are_attached_at_finish_and_forgotten_with_new_content(url):
    """As the SQLite test of that name; a done job is queued again by `retry` here, since a scan that
    finds the same content never resets it on a shared database."""
    from rkvideo.pipeline import Event, Kind, Result, Timings, Tokens
    with store.open_store(url) as db:
        job_id = db.put("/cam/drive.mp4", Status.QUEUED, size=100, mtime=1.0, digest="d")
        job = db.claim("w:1:a")
        first = Event(3.0, 9.0, "a cyclist rides past", [{"index": 0, "seconds": 3.0}], 2.5)
        db.keep_event(job.id, first)
        assert [(e["start"], e["text"], e["frames"]) for e in db.kept_events(job.id)] == [
            (3.0, "a cyclist rides past", [{"index": 0, "seconds": 3.0}])]
        assert db.search_events("cyclist") == []          # not part of a description yet
        result = Result(["/cam/drive.mp4"], Kind.VIDEO, [], "p", {"profile": "x"}, Tokens(1, 2, 3), False,
                        Timings(), "Two visits.", events=[first, Event(40.0, 55.0, "a van parks", [], 9.0)])
        description = db.finish(job, result)
        assert db.kept_events(job_id) == []
        [hit] = db.search_events("cyclists")               # stemmed
        assert (hit["path"], hit["start"], hit["end"], hit["description_id"]) == ("/cam/drive.mp4", 3.0, 9.0,
                                                                                description)
        assert "[cyclist]" in hit["snippet"]
        db.retry([job_id])
        db.keep_event(db.claim("w:1:a").id, first)
        db.put("/cam/drive.mp4", Status.QUEUED, size=120, mtime=3.0, digest="new")   # the worker's own job
        assert db.kept_events(job_id) == []
