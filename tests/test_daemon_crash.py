"""Exactly once through kill -9: the daemon is killed at chosen points and restarted.

The test-double runtime blocks the daemon exactly at a named point (see
tests/doubles/fake_runtime.py) and writes a marker; the test then kills the
process with SIGKILL, so every kill lands where intended without timing luck.

Attempts, by design: taking a job counts an attempt; a kill -9 (or a power cut)
while a job runs leaves it counted, because the recording may be what kills
the daemon (``watch.max_attempts`` then ends the crash loop); a clean stop by
SIGTERM gives the attempt back (test_watch checks that side).
"""
import shutil
from collections import Counter
from pathlib import Path

from camera import Crossing, Scene
from doubles import daemon

CLIPS = 20
# (point, occurrence): between two jobs, mid-encode, mid-generate, sidecars written but not
# committed, inside a sidecar write (temp file written, not renamed), description inserted but not
# committed.
KILLS = [("claim", 3), ("encode", 2), ("generate", 3), ("sidecar", 2), ("rename", 5), ("commit", 3)]


def test_every_clip_described_exactly_once_through_kill_9(tmp_path):
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, CLIPS)
    config = daemon.write_config(tmp_path, max_attempts=5)
    db = tmp_path / "rkvideo.db"
    marker = tmp_path / "marker"
    done_before = 0
    killed = Counter()          # path -> kills while its job was running
    for point, n in KILLS:
        marker.unlink(missing_ok=True)
        env = daemon.environment(RKVIDEO_TEST_BLOCK_AT=f"{point}:{n}", RKVIDEO_TEST_MARKER=marker)
        proc = daemon.start(folder, db, config, "--once", env=env)
        daemon.wait_for(marker.exists, proc, f"the daemon to reach {point}:{n}")
        daemon.kill(proc)

        table = daemon.jobs(db)
        running = [j for j in table.values() if j["status"] == "running"]
        if point == "claim":
            assert running == []            # between jobs: nothing in flight
        else:
            # Killed inside a job: that job is still marked running and has no description.
            assert len(running) == 1 and running[0]["n"] == 0
            assert running[0]["path"] in marker.read_text()
            killed[running[0]["path"]] += 1
        assert all(j["n"] == (1 if j["status"] == "done" else 0) for j in table.values())
        done = sum(j["status"] == "done" for j in table.values())
        assert done > done_before           # every run made progress before its kill
        done_before = done

    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    assert "interrupted last time, queued again" in result.stderr

    table = daemon.jobs(db)
    assert sorted(table) == sorted(str(p) for p in paths)
    assert {j["status"] for j in table.values()} == {"done"}
    assert [j["n"] for j in table.values()] == [1] * CLIPS
    # One attempt per job, plus one per kill -9 during it; the kill between jobs counted for nobody.
    assert sum(killed.values()) == len(KILLS) - 1
    assert {p: j["attempts"] for p, j in table.items()} == {str(p): 1 + killed[str(p)] for p in paths}
    per_path = daemon.query(db, "SELECT path, count(*) AS n FROM descriptions GROUP BY path")
    assert {r["path"]: r["n"] for r in per_path} == {str(p): 1 for p in paths}
    # The sidecars of a job killed after writing them were simply rewritten; the temporary file of the
    # write killed before its rename was removed at the next start.
    for p in paths:
        for kind in ("txt", "json", "vtt"):
            assert p.with_name(f"{p.name}.{kind}").is_file()
    assert not [f for f in folder.iterdir() if f.name.startswith(".")]
    # The FTS index matches the table after the rollbacks.
    fts = daemon.query(db, "SELECT count(*) AS n FROM descriptions_fts")
    assert fts[0]["n"] == CLIPS


def test_file_that_kills_the_daemon_fails_after_max_attempts(tmp_path):
    """A recording that crashes the process every time must not crash-loop the service."""
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, 3)
    config = daemon.write_config(tmp_path, max_attempts=2)
    db = tmp_path / "rkvideo.db"
    marker = tmp_path / "marker"
    for _ in range(2):
        marker.unlink(missing_ok=True)
        env = daemon.environment(RKVIDEO_TEST_BLOCK_AT="encode:1", RKVIDEO_TEST_MARKER=marker)
        proc = daemon.start(folder, db, config, "--once", env=env)
        daemon.wait_for(marker.exists, proc, "the first encode")
        daemon.kill(proc)
        assert str(paths[0]) in marker.read_text()      # always the same, oldest job

    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    table = daemon.jobs(db)
    first = table[str(paths[0])]
    assert first["status"] == "failed" and first["attempts"] == 2
    assert "stopped during each of 2 attempts" in first["error"]
    assert [table[str(p)]["status"] for p in paths[1:]] == ["done", "done"]
    assert Path(paths[0]).exists()      # the recording itself is never touched


def test_a_timeline_killed_between_moments_goes_on_from_the_kept_ones(tmp_path, scenes):
    """A long recording in timeline mode loses at most the moment being described: kill -9 after the
    second moment was kept, restart, and the third is the only one described again; the moments and
    the summary are committed with `done` once."""
    folder = tmp_path / "cameras"
    folder.mkdir()
    clip = folder / "yard.mp4"
    crossings = (Crossing(5, 10), Crossing(20.3, 21.7, size=0.1), Crossing(40, 48, size=0.5))
    shutil.copyfile(scenes("cam.mp4", Scene(crossings=crossings, seconds=60, fps=10, size=(160, 96))), clip)
    config = daemon.write_config(tmp_path, max_attempts=5, mode="timeline",
                                 timeline="segment_gap = 0.0\nmerge_gap = 0.0")
    db, marker, log = tmp_path / "rkvideo.db", tmp_path / "marker", tmp_path / "calls.log"
    env = daemon.environment(RKVIDEO_TEST_BLOCK_AT="segment:2", RKVIDEO_TEST_MARKER=marker, RKVIDEO_FAKE_LOG=log)
    proc = daemon.start(folder, db, config, "--once", env=env)
    daemon.wait_for(marker.exists, proc, "the second moment to be kept")
    daemon.kill(proc)
    assert daemon.status(db, clip) == "running"
    kept = daemon.query(db, "SELECT start_s, end_s, text FROM events WHERE description_id IS NULL ORDER BY start_s")
    assert len(kept) == 2 and daemon.query(db, "SELECT * FROM descriptions") == []
    described_before = log.read_text().count("generate-start yard.mp4")
    assert described_before == 2

    result = daemon.once(folder, db, config, env=daemon.environment(RKVIDEO_FAKE_LOG=log))
    assert result.returncode == 0, result.stderr
    assert "going on after 2 moment(s) kept by an interrupted run" in result.stderr
    [job] = daemon.query(db, "SELECT * FROM jobs")
    assert job["status"] == "done" and job["attempts"] == 2
    [description] = daemon.query(db, "SELECT * FROM descriptions")
    events = daemon.query(db, "SELECT start_s, end_s, text, description_id FROM events ORDER BY start_s")
    assert len(events) == 3 and {e["description_id"] for e in events} == {description["id"]}
    assert [(e["start_s"], e["end_s"], e["text"]) for e in events[:2]] == [
        (k["start_s"], k["end_s"], k["text"]) for k in kept]
    assert log.read_text().count("generate-start yard.mp4") == 3        # the third moment, once
    assert log.read_text().count("summary-start yard.mp4") == 1
    assert description["text"].startswith("Summary: 3 moments")
    vtt = clip.with_name("yard.mp4.vtt").read_text()
    assert vtt.count(" --> ") == 3
