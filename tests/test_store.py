"""The database on its own: schema, queue transitions, atomic finish, fingerprints, search."""
import json
import os
import sqlite3
import subprocess
import sys
from types import SimpleNamespace

import pytest

from rkvideo import store


def result(text="A red car parks.", prompt="Describe what happens in this video.", path="/cam/a.mp4"):
    """Stands in for pipeline.Result: the attributes store.py reads."""
    return SimpleNamespace(inputs=[path], kind="video", text=text, prompt=prompt,
                           frames=[{"index": 0, "pts": 100, "seconds": 0.5, "source": path}],
                           model={"profile": "qwen2-vl-2b", "vision": "enc.rknn", "llm": "llm.rkllm"},
                           tokens={"prompt": 300, "vision": 198, "new": 12}, timings={"generate": 1.5},
                           notes=["a note"])


@pytest.fixture
def db(tmp_path):
    s = store.Store(tmp_path / "sub" / "rkvideo.db")
    yield s
    s.close()


def test_schema_is_plain_tables_in_wal_mode_with_a_version(db, tmp_path):
    conn = sqlite3.connect(db.path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "descriptions", "descriptions_fts", "schema_version"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(store.SCHEMA_VERSION,)]
    columns = {r[1] for r in conn.execute("PRAGMA table_info(descriptions)")}
    assert {"text", "model", "vision_model", "llm_model", "prompt", "frames", "prompt_tokens", "new_tokens",
            "timings", "created_at"} <= columns
    conn.close()
    store.Store(db.path).close()        # opening again adds nothing
    conn = sqlite3.connect(db.path)
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1
    conn.close()


def test_newer_schema_is_refused(db):
    db.db.execute("UPDATE schema_version SET version = ?", [store.SCHEMA_VERSION + 1])
    with pytest.raises(store.StoreError, match="newer than this rkvideo"):
        store.Store(db.path)


def test_read_only_commands_do_not_create_a_database(tmp_path):
    with pytest.raises(store.StoreError, match="no database yet"):
        store.Store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_daemon_lock_survives_other_handles_on_the_lock_file_closing(db, tmp_path):
    """A POSIX lock would vanish when any descriptor of the file closes in the process; flock does not."""
    db.lock_daemon()
    os.close(os.open(f"{db.path}.lock", os.O_RDWR))              # e.g. another Store creating a schema
    other = subprocess.run([sys.executable, "-c", "import sys; from rkvideo import store\n"
                            "try:\n    store.Store(sys.argv[1]).lock_daemon()\n"
                            "except store.StoreError as exc:\n    sys.exit(str(exc))", str(db.path)],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 1 and "another `rkvideo watch` is using this database" in other.stderr
    db.close()                                                  # the lock goes with the Store
    again = store.Store(db.path)
    again.lock_daemon()
    again.close()


def test_job_lifecycle_claim_retry_fail(db):
    first = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    second = db.put("/cam/b.mp4", "queued", size=20, mtime=2.0, digest="h2")
    job = db.claim_next()
    assert (job["id"], job["status"], job["attempts"]) == (first, "running", 1)
    db.fail(first, "boom", retry_in=3600)               # backing off: the next job goes first
    assert db.claim_next()["id"] == second
    assert db.claim_next() is None
    assert db.job(first)["status"] == "queued" and db.job(first)["not_before"] > store.now()
    db.fail(second, "bad file")
    assert (db.job(second)["status"], db.job(second)["error"]) == ("failed", "bad file")
    assert db.retry() == 1                               # default: every failed job
    assert (db.job(second)["status"], db.job(second)["attempts"], db.job(second)["error"]) == ("queued", 0, None)


def test_recover_requeues_then_fails_a_job_that_keeps_dying(db):
    job_id = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    db.claim_next()
    assert [j["id"] for j in db.recover(max_attempts=2)[0]] == [job_id]
    assert db.job(job_id)["status"] == "queued"
    db.claim_next()
    requeued, failed = db.recover(max_attempts=2)
    assert requeued == [] and [j["id"] for j in failed] == [job_id]
    assert db.job(job_id)["status"] == "failed"
    assert "stopped during each of 2 attempts" in db.job(job_id)["error"]


def test_requeue_after_a_clean_stop_does_not_count_the_attempt(db):
    job_id = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    db.claim_next()
    db.requeue(job_id)
    assert (db.job(job_id)["status"], db.job(job_id)["attempts"]) == ("queued", 0)


def test_finish_is_one_transaction(db, monkeypatch):
    job_id = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    job = db.claim_next()
    real = db.db.execute

    def fail_on_done(sql, *args):
        if sql.startswith("UPDATE jobs SET status = 'done'"):
            raise sqlite3.OperationalError("disk I/O error")
        return real(sql, *args)

    monkeypatch.setattr(db.db, "execute", fail_on_done)
    with pytest.raises(sqlite3.OperationalError):
        db.finish(job, result())
    monkeypatch.undo()
    # The description inserted before the failure was rolled back with it.
    assert db.descriptions(job_id) == [] and db.job(job_id)["status"] == "running"
    db.finish(job, result())
    assert db.job(job_id)["status"] == "done" and len(db.descriptions(job_id)) == 1


def test_descriptions_keep_every_field_as_plain_json(db):
    job_id = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    db.finish(db.claim_next(), result(), timings={"describe": 2.0})
    (row,) = db.descriptions(job_id)
    assert row["frames"] == [{"index": 0, "pts": 100, "seconds": 0.5, "source": "/cam/a.mp4"}]
    assert row["timings"] == {"generate": 1.5, "describe": 2.0}
    assert (row["model"], row["vision_model"], row["llm_model"]) == ("qwen2-vl-2b", "enc.rknn", "llm.rkllm")
    assert (row["prompt_tokens"], row["vision_tokens"], row["new_tokens"]) == (300, 198, 12)
    assert (row["hash"], row["path"], row["source"]) == ("h1", "/cam/a.mp4", "watch")
    raw = db.db.execute("SELECT frames, notes FROM descriptions").fetchone()
    assert json.loads(raw[1]) == ["a note"] and isinstance(raw[0], str)


def test_drop_keeps_jobs_that_have_descriptions(db):
    kept = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    db.finish(db.claim_next(), result())
    gone = db.put("/cam/b.mp4", "queued", size=20, mtime=2.0, digest="h2")
    assert db.drop(kept) == ("kept", None) and db.drop(gone) == ("dropped", None)
    assert db.job(kept) is not None and db.job(gone) is None


def test_a_described_job_queued_again_goes_back_to_done_when_its_file_is_deleted(db):
    job_id = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    db.finish(db.claim_next(), result())
    for running in (False, True):               # deleted while queued again, or while being described
        assert db.retry([job_id]) == 1
        if running:
            db.claim_next()
        assert db.drop(job_id, running=running) == ("kept", None)
        job = db.job(job_id)
        assert (job["status"], job["not_before"], job["started_at"]) == ("done", None, None)
        assert "earlier description is kept" in job["error"] and len(db.descriptions(job_id)) == 1


def _copy(db, path, original):
    return db.put(path, "skipped", size=10, mtime=1.0, digest=db.job(original)["hash"],
                  error=store.same_content(db.job(original)), duplicate_of=original)


def test_dropping_an_undescribed_original_queues_its_oldest_copy(db):
    original = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    first, second = _copy(db, "/cam/a-copy.mp4", original), _copy(db, "/cam/a-copy2.mp4", original)
    what, promoted = db.drop(original)
    assert (what, promoted) == ("dropped", {"id": first, "path": "/cam/a-copy.mp4"})
    job = db.job(first)
    assert (job["status"], job["duplicate_of"], job["error"], job["attempts"]) == ("queued", None, None, 0)
    # The other copy now points at the one that will be described.
    other = db.job(second)
    assert (other["status"], other["duplicate_of"]) == ("skipped", first)
    assert other["error"] == "same content as /cam/a-copy.mp4 (job %d)" % first
    assert db.claim_next()["id"] == first


def test_a_described_original_keeps_its_copies_skipped(db):
    original = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    db.finish(db.claim_next(), result())
    copy = _copy(db, "/cam/a-copy.mp4", original)
    assert db.drop(original) == ("kept", None)
    assert (db.job(copy)["status"], db.job(copy)["duplicate_of"]) == ("skipped", original)
    # New content at a done path: the old content is described, the copy stays skipped too.
    db.put("/cam/a.mp4", "queued", size=11, mtime=2.0, digest="h2")
    assert db.job(copy)["status"] == "skipped"


def test_new_content_at_an_undescribed_original_queues_its_copy(db):
    original = db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")
    copy = _copy(db, "/cam/a-copy.mp4", original)
    db.put("/cam/a.mp4", "queued", size=10, mtime=1.0, digest="h1")      # same content: nothing moves
    assert db.job(copy)["status"] == "skipped"
    db.put("/cam/a.mp4", "queued", size=12, mtime=3.0, digest="h3")      # rewritten before it was described
    assert (db.job(copy)["status"], db.job(copy)["duplicate_of"]) == ("queued", None)


def test_search_ranks_and_marks_the_word(db):
    texts = {"/cam/a.mp4": "A red car parks. The red car leaves.", "/cam/b.mp4": "A dog sleeps on a red mat.",
             "/cam/c.mp4": "Nobody is there."}
    for path, text in texts.items():
        db.put(path, "queued", size=1, mtime=1.0, digest=path)
        db.finish(db.claim_next(), result(text, path=path))
    hits = db.search("red car")
    assert [h["path"] for h in hits] == ["/cam/a.mp4"]
    assert "[red] [car]" in hits[0]["snippet"]
    assert [h["path"] for h in db.search("red")] == ["/cam/a.mp4", "/cam/b.mp4"]     # two hits rank first
    assert db.search('NOT "') == []                      # quoted: operators and stray quotes are words
    assert {h["path"] for h in db.search("dog OR nobody", raw=True)} == {"/cam/b.mp4", "/cam/c.mp4"}
    with pytest.raises(store.StoreError, match="FTS5"):
        db.search('"unbalanced', raw=True)


def test_move_folder_moves_only_that_folder(db):
    db.put("/cam/day/a.mp4", "queued")
    db.put("/cam/day2/b.mp4", "queued")
    assert db.move_folder("/cam/day", "/cam/archive") == 1
    assert db.job_at("/cam/archive/a.mp4") and db.job_at("/cam/day2/b.mp4")


def test_save_result_adds_a_description_per_call(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"not really a video, but a file with content")
    path = tmp_path / "rkvideo.db"
    store.save_result(path, result(path=str(clip)))
    store.save_result(path, result("Someone waves.", prompt="Who is there?", path=str(clip)))
    s = store.Store(path)
    job = s.job_at(str(clip))
    assert job["status"] == "done" and job["hash"] == store.fingerprint(clip)
    assert [d["prompt"] for d in s.descriptions(job["id"])] == ["Describe what happens in this video.",
                                                                "Who is there?"]
    s.close()


def test_save_result_that_cannot_insert_leaves_no_done_job(tmp_path, monkeypatch):
    """A job must never be done without a description: the daemon would skip its file forever."""
    clip, queued = tmp_path / "a.mp4", tmp_path / "b.mp4"
    clip.write_bytes(b"a file with content")
    queued.write_bytes(b"another file with content")
    path = tmp_path / "rkvideo.db"
    s = store.Store(path)
    s.put(str(queued), "queued", size=1, mtime=1.0, digest="old content")
    s.close()

    def broken_insert(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store.Store, "_insert_description", broken_insert)
    for target in (clip, queued):
        with pytest.raises(store.StoreError, match="disk is full"):
            store.save_result(path, result(path=str(target)))
    monkeypatch.undo()
    s = store.Store(path)
    assert s.job_at(str(clip)) is None
    assert (s.job_at(str(queued))["status"], s.job_at(str(queued))["hash"]) == ("queued", "old content")
    assert s.db.execute("SELECT count(*) FROM descriptions").fetchone()[0] == 0
    s.close()


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
