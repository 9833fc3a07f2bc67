"""The drop-folder daemon as a real process on real files and a real SQLite database.

The vision encoder and LLM are the test doubles of tests/doubles/fake_runtime.py
(they decode the real clips but compute nothing); everything else is the
shipped code, run through tests/doubles/run_daemon.py.
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

import footage
from doubles import capabilities, daemon
from rkvideo import cli

ROOT = Path(__file__).resolve().parent.parent


def log_lines(path):
    """The fake runtime's call log: [event, clip name, time] per line (clip names may hold spaces)."""
    lines = []
    for line in path.read_text().splitlines():
        event, rest = line.split(" ", 1)
        clip, stamp = rest.rsplit(" ", 1)
        lines.append([event, clip, stamp])
    return lines


def runtime_calls(path, event):
    return [words[1] for words in log_lines(path) if words[0] == event]


def assert_one_request_at_a_time(path):
    """Every runtime call ends before the next starts."""
    open_call = None
    for event, clip, _ in log_lines(path):
        kind, _, phase = event.partition("-")
        if phase == "start":
            assert open_call is None, f"{kind} of {clip} started during {open_call}"
            open_call = f"{kind} of {clip}"
        elif phase in ("end", "fail", "abort"):
            open_call = None


# ------------------------------------------------------------------ bad files

def test_bad_files_end_failed_or_skipped_with_a_reason_while_good_files_are_described(tmp_path):
    folder = tmp_path / "cameras"
    good = daemon.clips(folder, 2, prefix="good")
    odd_name = daemon.clip(folder / "Einfahrt Tür 東門 1.mp4", 5)
    nested = daemon.clip(folder / "day 2" / "late.MP4", 6)        # recursive, upper-case suffix
    source = daemon.clip(tmp_path / "source.mp4", 7)
    empty = footage.write_bytes(folder / "empty.mp4", b"")
    truncated = footage.truncate(source, folder / "truncated.mp4", keep=0.4)
    noise = footage.write_bytes(folder / "noise.mp4", os.urandom(20000))
    audio = footage.make_clip(folder / "audio.mp4", seconds=1.0, audio_only=True)
    directory = folder / "x.mp4"
    directory.mkdir()
    pipe = folder / "pipe.mp4"
    os.mkfifo(pipe)
    undecodable = os.path.join(os.fsencode(folder), b"caf\xe9.mp4")
    shutil.copyfile(source, undecodable)
    (folder / "notes.txt").write_text("not a video")
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"

    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    table = daemon.jobs(db)

    for path in good + [odd_name, nested]:
        assert table[str(path)]["status"] == "done", table[str(path)]
        assert table[str(path)]["n"] == 1
    expected = {empty: ("failed", "empty file"), truncated: ("failed", "video"), noise: ("failed", "video"),
                audio: ("failed", "video stream"),
                directory: ("skipped", "is a folder"), pipe: ("skipped", "not a regular file")}
    for path, (status, reason) in expected.items():
        job = table[str(path)]
        assert (job["status"], job["n"]) == (status, 0), job
        assert reason in job["error"], job
        assert f"{status} {path}" in result.stderr       # one log line names the file and the reason
    assert str(folder / "notes.txt") not in table
    # A name SQLite cannot store as text is reported, not stored and not fatal.
    assert "caf\\xe9.mp4: file name is not valid UTF-8" in result.stderr
    assert len(table) == len(expected) + 4


def test_unreadable_file_fails_with_permission_denied(tmp_path):
    popen = {}
    if os.geteuid() == 0:
        if not capabilities.can_drop_capabilities():
            pytest.skip("running as root without CAP_SETPCAP: chmod 000 cannot stop root from reading")
        popen["preexec_fn"] = capabilities.drop_dac_capabilities
    folder = tmp_path / "cameras"
    readable = daemon.clip(folder / "ok.mp4", 0)
    locked = daemon.clip(folder / "locked.mp4", 1)
    locked.chmod(0)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    try:
        result = daemon.once(folder, db, config, **popen)
    finally:
        locked.chmod(0o644)
    assert result.returncode == 0, result.stderr
    table = daemon.jobs(db)
    assert table[str(readable)]["status"] == "done"
    assert table[str(locked)]["status"] == "failed"
    assert "Permission denied" in table[str(locked)]["error"]
    assert "let the rkvideo user read it" in table[str(locked)]["error"]


# ------------------------------------------------------------ growing files

def test_slowly_written_file_is_described_once_after_it_stops_growing(tmp_path):
    folder = tmp_path / "cameras"
    folder.mkdir()
    config = daemon.write_config(tmp_path, settle=1.0)
    db = tmp_path / "rkvideo.db"
    calls = tmp_path / "calls.log"
    # Matroska is readable while it is written, so describing it early would "work" with fewer frames.
    source = footage.clip("slow.mkv", seconds=3.0, fps=10, size=(64, 48))
    data = source.read_bytes()
    proc = daemon.start(folder, db, config, env=daemon.environment(RKVIDEO_FAKE_LOG=calls))
    try:
        daemon.wait_for(lambda: db.exists() and daemon.query(db, "SELECT 1 FROM schema_version"), proc,
                        "the database")
        target = folder / "slow.mkv"
        chunks = 12
        with open(target, "wb") as f:
            for k in range(chunks):
                f.write(data[k * len(data) // chunks:(k + 1) * len(data) // chunks])
                f.flush()
                # The writer's pace is the scenario: pauses far shorter than settle_seconds, so
                # the file never looks finished before it is.
                time.sleep(0.1)
        daemon.wait_for(lambda: daemon.status(db, target) == "done", proc, "slow.mkv to be described")
        code, err = daemon.stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    job = daemon.jobs(db)[str(target)]
    assert job["n"] == 1 and job["size"] == len(data) and job["attempts"] == 1
    described = daemon.query(db, "SELECT frames FROM descriptions")
    assert len(described) == 1
    frames = json.loads(described[0]["frames"])
    assert len(frames) == 4 and frames[-1]["seconds"] > 2.0      # the last quarter of the full 3 s
    assert runtime_calls(calls, "encode-start") == ["slow.mkv"]


# --------------------------------------------- renames, moves, duplicates, deletes

def test_renames_moves_duplicates_and_deletes_while_the_worker_is_busy(tmp_path):
    folder = tmp_path / "cameras"
    a, b, c, d = (daemon.clip(folder / f"{name}.mp4", n) for n, name in enumerate("abcd"))
    outside = daemon.clip(tmp_path / "outside" / "e.mp4", 4)
    gate, calls = tmp_path / "gate", tmp_path / "calls.log"
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    env = daemon.environment(RKVIDEO_FAKE_GATE=gate, RKVIDEO_FAKE_LOG=calls)
    proc = daemon.start(folder, db, config, env=env)
    try:
        # a is being described (held at the gate); b, c, d wait in the queue.
        daemon.wait_for(lambda: calls.exists() and "generate-start" in calls.read_text(), proc, "a to start")
        assert runtime_calls(calls, "generate-start") == ["a.mp4"]
        daemon.wait_for(lambda: [daemon.status(db, p) for p in (b, c, d)] == ["queued"] * 3, proc, "the queue")
        ids = {p: daemon.jobs(db)[str(p)]["id"] for p in (b, d)}

        c.unlink()                                           # deleted while queued: dropped
        daemon.wait_for(lambda: str(c) not in daemon.jobs(db), proc, "c to leave the queue")
        d2 = folder / "d renamed.mp4"
        d.rename(d2)                                         # renamed while queued: same job, new path
        daemon.wait_for(lambda: daemon.jobs(db).get(str(d2), {}).get("id") == ids[d], proc, "the rename of d")
        copy = folder / "b-copy.mp4"
        shutil.copyfile(b, copy)                             # same content under another name: skipped
        daemon.wait_for(lambda: daemon.status(db, copy) == "skipped", proc, "the duplicate")
        e = folder / "e.mp4"
        os.rename(outside, e)                                # moved in from outside the folder
        daemon.wait_for(lambda: daemon.status(db, e) == "queued", proc, "the moved-in file")

        gate.touch()
        daemon.wait_for(lambda: daemon.settled(db, [a, b, d2, e]), proc, "the queue to drain")
        (folder / "archive").mkdir()
        a2 = folder / "archive" / "a.mp4"
        a.rename(a2)                                         # a described file moves: the job follows
        daemon.wait_for(lambda: str(a2) in daemon.jobs(db), proc, "the move of a")
        code, err = daemon.stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err

    table = daemon.jobs(db)
    assert {p: (j["status"], j["n"]) for p, j in table.items()} == {
        str(a2): ("done", 1), str(b): ("done", 1), str(d2): ("done", 1), str(e): ("done", 1),
        str(copy): ("skipped", 0)}
    assert table[str(copy)]["duplicate_of"] == ids[b]
    assert f"same content as {b}" in table[str(copy)]["error"]
    assert sorted(runtime_calls(calls, "generate-start")) == ["a.mp4", "b.mp4", "d renamed.mp4", "e.mp4"]
    assert_one_request_at_a_time(calls)
    # Sidecars follow the name the recording had when it was described.
    assert (folder / "d renamed.mp4.vtt").read_text().startswith("WEBVTT")


def test_a_copy_is_described_when_its_undescribed_original_is_deleted(tmp_path):
    folder = tmp_path / "cameras"
    first, a = daemon.clip(folder / "first.mp4", 0), daemon.clip(folder / "a.mp4", 1)
    gate, calls = tmp_path / "gate", tmp_path / "calls.log"
    config = daemon.write_config(tmp_path, sidecars=())
    db = tmp_path / "rkvideo.db"
    proc = daemon.start(folder, db, config, env=daemon.environment(RKVIDEO_FAKE_GATE=gate, RKVIDEO_FAKE_LOG=calls))
    try:
        # first.mp4 is held at the gate, a.mp4 waits in the queue.
        daemon.wait_for(lambda: calls.exists() and "generate-start" in calls.read_text(), proc, "first to start")
        daemon.wait_for(lambda: daemon.status(db, a) == "queued", proc, "a in the queue")
        copy, copy2 = folder / "a-copy.mp4", folder / "a-copy2.mp4"
        shutil.copyfile(a, copy)
        daemon.wait_for(lambda: daemon.status(db, copy) == "skipped", proc, "the copy to be skipped")
        shutil.copyfile(a, copy2)
        daemon.wait_for(lambda: daemon.status(db, copy2) == "skipped", proc, "the second copy to be skipped")
        a.unlink()                                  # the original goes before it was described
        daemon.wait_for(lambda: str(a) not in daemon.jobs(db), proc, "a to leave the queue")
        gate.touch()
        daemon.wait_for(lambda: daemon.settled(db, [first, copy]), proc, "the queue to drain")

        # A described original that is deleted keeps its description; its copy stays skipped.
        first_copy = folder / "first-copy.mp4"
        shutil.copyfile(first, first_copy)
        daemon.wait_for(lambda: daemon.status(db, first_copy) == "skipped", proc, "the copy of first")
        first.unlink()
        first_copy.touch()                          # an event after the delete: both are handled in order
        daemon.wait_for(lambda: daemon.jobs(db)[str(first_copy)]["mtime"] == first_copy.stat().st_mtime, proc,
                        "the touch after the delete")
        code, err = daemon.stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    table = daemon.jobs(db)
    ids = {p: table[str(p)]["id"] for p in (copy, first)}
    assert {p: (j["status"], j["n"], j["duplicate_of"]) for p, j in table.items()} == {
        str(first): ("done", 1, None), str(copy): ("done", 1, None), str(copy2): ("skipped", 0, ids[copy]),
        str(first_copy): ("skipped", 0, ids[first])}
    assert f"same content as {copy} (job {ids[copy]})" == table[str(copy2)]["error"]
    assert f"queued {copy} [job {ids[copy]}]: its original was deleted" in err
    assert sorted(runtime_calls(calls, "generate-start")) == ["a-copy.mp4", "first.mp4"]


def test_sidecars_of_recordings_with_the_same_name_never_overwrite_each_other(tmp_path):
    """Two cameras' folders both hold 0800.mp4, and one of them 0800.MOV too; sidecars go to output.dir."""
    door, yard, out = tmp_path / "door", tmp_path / "yard", tmp_path / "out"
    recordings = {door / "0800.mp4": door, door / "0800.MOV": door, yard / "0800.mp4": yard,
                  yard / "day 2" / "0800.mp4": yard}
    for n, path in enumerate(recordings):
        daemon.clip(path, n)
    config = daemon.write_config(tmp_path, sidecars=("json", "vtt"))
    config.write_text(config.read_text() + f'dir = "{out}"\n')
    db = tmp_path / "rkvideo.db"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = out / "door" / f".0800.mp4.json.{ended.pid}.tmp"     # a writer killed before its rename
    stale.parent.mkdir(parents=True)
    stale.write_text("{")
    result = daemon.once([door, yard], db, config)
    assert result.returncode == 0, result.stderr
    assert daemon.settled(db, recordings) and all(j["status"] == "done" for j in daemon.jobs(db).values())
    for path, root in recordings.items():
        place = out / root.name / path.parent.relative_to(root)
        assert json.loads((place / f"{path.name}.json").read_text())["recording"] == str(path)
        assert (place / f"{path.name}.vtt").read_text().startswith("WEBVTT")
    assert len([p for p in out.rglob("*") if p.is_file()]) == 2 * len(recordings)       # the stale one is gone
    assert f"removed {stale}: a sidecar write was interrupted there" in result.stderr

    # Two watched folders with one name would share a place under output.dir: refused up front.
    other = tmp_path / "elsewhere" / "door"
    other.mkdir(parents=True)
    refused = daemon.once([door, other], db, config)
    assert refused.returncode == 2 and "the sidecars of both would go to" in refused.stderr


def test_symlinks_planted_where_sidecars_go_never_reach_the_database(tmp_path):
    """The attack from the hardening issue: whoever can write into a watched folder plants links
    named like the sidecars, and like their temporary names under the old scheme
    (``.NAME.KIND.<daemon pid>.tmp``), pointing at the daemon's own database, while the daemon
    describes the recording. The database survives and the sidecars are real files."""
    folder = tmp_path / "cams"
    late = daemon.clip(folder / "late.mp4", 7)
    db = tmp_path / "rkvideo.db"
    gate = tmp_path / "gate"
    proc = daemon.start(folder, db, daemon.write_config(tmp_path),
                        env=daemon.environment(RKVIDEO_FAKE_GATE=gate))
    try:
        daemon.wait_for(lambda: daemon.status(db, late) == "running", proc, "the job to run")
        for kind in ("txt", "json", "vtt"):
            (folder / f"late.mp4.{kind}").symlink_to(db)
            (folder / f".late.mp4.{kind}.{proc.pid}.tmp").symlink_to(db)
        gate.touch()
        daemon.wait_for(lambda: daemon.status(db, late) == "done", proc, "the job to finish")
    finally:
        code, err = daemon.stop(proc)
    assert code == 0, err
    assert daemon.jobs(db)[str(late)]["n"] == 1
    for kind in ("txt", "json", "vtt"):
        sidecar = folder / f"late.mp4.{kind}"
        assert sidecar.is_file() and not sidecar.is_symlink()
    assert json.loads((folder / "late.mp4.json").read_text())["recording"] == str(late)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_not_recursive_ignores_folders_created_or_moved_in_later(tmp_path):
    folder, outside = tmp_path / "cameras", tmp_path / "outside"
    top = daemon.clip(folder / "top.mp4", 0)
    nested = daemon.clip(folder / "old" / "nested.mp4", 1)
    config = daemon.write_config(tmp_path)
    config.write_text(config.read_text().replace("[watch]\n", "[watch]\nrecursive = false\n"))
    db = tmp_path / "rkvideo.db"
    proc = daemon.start(folder, db, config)
    try:
        daemon.wait_for(lambda: daemon.status(db, top) == "done", proc, "the start-up scan")
        moved = daemon.clip(outside / "day 2" / "moved.mp4", 2)
        (outside / "day 2").rename(folder / "day 2")                 # a folder with a recording moved in
        (folder / "day 3").mkdir()
        created = daemon.clip(folder / "day 3" / "created.mp4", 3)    # a new folder, then a file in it
        like_video = outside / "x.mp4"
        like_video.mkdir()
        like_video.rename(folder / "x.mp4")                          # a folder named like a video, in the root
        # Events are handled in order and an earlier file settles no later than a later one: once this
        # one is described, the files above would have had their jobs.
        last = daemon.clip(outside / "last.mp4", 4)
        os.rename(last, folder / "last.mp4")
        daemon.wait_for(lambda: daemon.status(db, folder / "last.mp4") == "done", proc, "last.mp4")
        code, err = daemon.stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert {p: j["status"] for p, j in daemon.jobs(db).items()} == {
        str(top): "done", str(folder / "last.mp4"): "done", str(folder / "x.mp4"): "skipped"}
    assert not {str(nested), str(folder / "day 2" / moved.name), str(created)} & set(daemon.jobs(db))


def test_a_recording_renamed_while_it_is_described_is_stored_under_its_new_name(tmp_path):
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    gate, calls = tmp_path / "gate", tmp_path / "calls.log"
    config = daemon.write_config(tmp_path, sidecars=("txt",))
    db = tmp_path / "rkvideo.db"
    proc = daemon.start(folder, db, config, env=daemon.environment(RKVIDEO_FAKE_GATE=gate, RKVIDEO_FAKE_LOG=calls))
    try:
        daemon.wait_for(lambda: calls.exists() and "generate-start" in calls.read_text(), proc, "a to start")
        a2 = folder / "a renamed.mp4"
        a.rename(a2)
        daemon.wait_for(lambda: str(a2) in daemon.jobs(db), proc, "the job to follow the rename")
        gate.touch()
        daemon.wait_for(lambda: daemon.status(db, a2) == "done", proc, "the description")
        code, err = daemon.stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    (row,) = daemon.query(db, "SELECT path, job_id FROM descriptions")
    assert (row["path"], row["job_id"]) == (str(a2), daemon.jobs(db)[str(a2)]["id"])
    assert sorted(p.name for p in folder.iterdir()) == ["a renamed.mp4", "a renamed.mp4.txt"]


# ------------------------------------------------------ SIGTERM and systemd

def _notifications(sock):
    messages = []
    try:
        while True:
            messages += sock.recv(4096).decode().split("\n")
    except BlockingIOError:
        return messages


def test_sigterm_mid_generation_stops_cleanly_and_talks_to_systemd(tmp_path):
    folder = tmp_path / "cameras"
    a, b = daemon.clip(folder / "a.mp4", 0), daemon.clip(folder / "b.mp4", 1)
    gate, calls = tmp_path / "gate", tmp_path / "calls.log"
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    seen = []
    env = daemon.environment(RKVIDEO_FAKE_GATE=gate, RKVIDEO_FAKE_LOG=calls, NOTIFY_SOCKET=tmp_path / "notify",
                             WATCHDOG_USEC=2_000_000)
    proc = daemon.start(folder, db, config, env=env)
    try:
        daemon.wait_for(lambda: seen.extend(_notifications(sock)) or "READY=1" in seen, proc, "READY=1")
        daemon.wait_for(lambda: seen.extend(_notifications(sock)) or "WATCHDOG=1" in seen, proc, "a ping")
        daemon.wait_for(lambda: calls.exists() and "generate-start" in calls.read_text(), proc, "generation")
        daemon.wait_for(lambda: daemon.status(db, b) == "queued", proc, "b in the queue")

        # A second daemon on the same database is refused while this one runs.
        second = daemon.once(folder, db, config)
        assert second.returncode == 1
        assert "another `rkvideo watch` is using this database" in second.stderr

        code, err = daemon.stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen += _notifications(sock)
    assert code == 0, err
    assert "STOPPING=1" in seen
    assert runtime_calls(calls, "generate-abort") == ["a.mp4"]
    # The aborted job is back in the queue as if never tried; nothing half-written anywhere.
    table = daemon.jobs(db)
    assert (table[str(a)]["status"], table[str(a)]["attempts"], table[str(a)]["n"]) == ("queued", 0, 0)
    assert daemon.query(db, "SELECT count(*) AS n FROM descriptions")[0]["n"] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4", "b.mp4"]

    # While stopped: b is deleted (its queued job goes), a is renamed (its job follows).
    b.unlink()
    a2 = folder / "a-renamed.mp4"
    a.rename(a2)
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    table = daemon.jobs(db)
    assert list(table) == [str(a2)] and table[str(a2)]["status"] == "done" and table[str(a2)]["n"] == 1
    assert f"dropped {b} [job" in result.stderr


def test_a_second_signal_exits_at_once_when_the_runtime_ignores_abort(tmp_path):
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    gate, calls = tmp_path / "gate", tmp_path / "calls.log"
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    seen = []
    env = daemon.environment(RKVIDEO_FAKE_GATE=gate, RKVIDEO_FAKE_LOG=calls, RKVIDEO_FAKE_IGNORE_ABORT=1,
                             NOTIFY_SOCKET=tmp_path / "notify")
    proc = daemon.start(folder, db, config, env=env)
    try:
        daemon.wait_for(lambda: calls.exists() and "generate-start" in calls.read_text(), proc, "generation")
        proc.send_signal(signal.SIGTERM)
        daemon.wait_for(lambda: seen.extend(_notifications(sock)) or "STOPPING=1" in seen, proc, "STOPPING=1")
        proc.send_signal(signal.SIGINT)             # the runtime ignores the abort: exit now
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("a second signal did not stop the daemon") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    sock.close()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert f"second signal ({int(signal.SIGINT)}): exiting at once" in err and f"{a} [job 1]" in err
    job = daemon.jobs(db)[str(a)]
    assert (job["status"], job["attempts"], job["n"]) == ("running", 1, 0)
    # The next start queues it again; the forced stop counted as an attempt, like a crash.
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    assert "interrupted last time, queued again" in result.stderr
    job = daemon.jobs(db)[str(a)]
    assert (job["status"], job["attempts"], job["n"]) == ("done", 2, 1)


def test_a_notify_socket_nobody_reads_does_not_stall_the_daemon(tmp_path):
    """systemd reads every message; a stuck or absent reader must not block the main loop."""
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, 2)
    config = daemon.write_config(tmp_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))                     # bound, never read
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        try:
            while True:                                     # fill its queue before the daemon starts
                filler.sendto(b"X=1", socket.MSG_DONTWAIT, str(tmp_path / "notify"))
        except BlockingIOError:
            pass
    env = daemon.environment(NOTIFY_SOCKET=tmp_path / "notify", WATCHDOG_USEC=1000)
    result = daemon.once(folder, tmp_path / "rkvideo.db", config, env=env)
    assert result.returncode == 0, result.stderr
    assert daemon.settled(tmp_path / "rkvideo.db", paths)
    sock.close()


def test_periodic_rescan_finds_files_no_event_announced(tmp_path):
    """Like a network share, where inotify does not see what other machines write."""
    folder = tmp_path / "cameras"
    first = daemon.clip(folder / "first.mp4", 0)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    env = daemon.environment(RKVIDEO_TEST_NO_EVENTS=1, RKVIDEO_TEST_RESCAN=0.3)
    proc = daemon.start(folder, db, config, env=env)
    try:
        daemon.wait_for(lambda: daemon.status(db, first) == "done", proc, "the start-up scan")
        later = daemon.clip(folder / "later.mp4", 1)
        daemon.wait_for(lambda: daemon.status(db, later) == "done", proc, "a rescan to find later.mp4")
        code, err = daemon.stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err


def test_described_file_renamed_while_stopped_keeps_its_description(tmp_path):
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    assert daemon.once(folder, db, config).returncode == 0
    job_id = daemon.jobs(db)[str(a)]["id"]
    a2 = folder / "renamed" / "a.mp4"
    a2.parent.mkdir()
    a.rename(a2)
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    table = daemon.jobs(db)
    assert list(table) == [str(a2)]
    assert (table[str(a2)]["id"], table[str(a2)]["n"]) == (job_id, 1)
    assert "found by content" in result.stderr


# ------------------------------------------------------------ retries

def test_a_done_recording_retried_and_then_deleted_stays_done(tmp_path, capsys):
    folder = tmp_path / "cameras"
    a = daemon.clip(folder / "a.mp4", 0)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    assert daemon.once(folder, db, config).returncode == 0
    assert cli.main(["retry", str(a), "--db", str(db)]) == 0
    assert "1 job queued again" in capsys.readouterr().out
    a.unlink()
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    job = daemon.jobs(db)[str(a)]
    assert (job["status"], job["n"]) == ("done", 1)
    assert "file deleted before it was described again" in job["error"]
    assert f"done {a} [job {job['id']}]: file deleted before it was described again" in result.stderr


def test_failures_retry_up_to_max_attempts_then_retry_command_requeues(tmp_path, capsys):
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, 3)
    calls = tmp_path / "calls.log"
    config = daemon.write_config(tmp_path, max_attempts=3)
    db = tmp_path / "rkvideo.db"
    env = daemon.environment(RKVIDEO_FAKE_FAIL="clip01", RKVIDEO_FAKE_LOG=calls)
    result = daemon.once(folder, db, config, env=env)
    assert result.returncode == 0, result.stderr
    table = daemon.jobs(db)
    bad = table[str(paths[1])]
    assert (bad["status"], bad["attempts"], bad["n"]) == ("failed", 3, 0)
    assert "fake failure for clip01.mp4" in bad["error"]
    assert runtime_calls(calls, "generate-fail") == ["clip01.mp4"] * 3
    assert [table[str(p)]["status"] for p in (paths[0], paths[2])] == ["done", "done"]

    assert cli.main(["retry", "--db", str(db)]) == 0
    assert "1 job queued again" in capsys.readouterr().out
    bad = daemon.jobs(db)[str(paths[1])]
    assert (bad["status"], bad["attempts"], bad["error"]) == ("queued", 0, None)
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    assert daemon.jobs(db)[str(paths[1])]["n"] == 1


def _seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_backoff_keeps_a_failing_job_from_blocking_the_queue(tmp_path):
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, 3)
    config = daemon.write_config(tmp_path, max_attempts=5)
    config.write_text(config.read_text().replace("retry_backoff = 0", "retry_backoff = 600"))
    db = tmp_path / "rkvideo.db"
    env = daemon.environment(RKVIDEO_FAKE_FAIL="clip00")
    result = daemon.once(folder, db, config, env=env)
    assert result.returncode == 0, result.stderr
    table = daemon.jobs(db)
    assert [table[str(p)]["status"] for p in paths[1:]] == ["done", "done"]
    for attempts in (1, 2):
        if attempts > 1:
            # Make it due now: the next run tries again, and the wait doubles.
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE jobs SET not_before = NULL WHERE path = ?", [str(paths[0])])
            conn.close()
            result = daemon.once(folder, db, config, env=env)
            assert result.returncode == 0, result.stderr
        first = daemon.jobs(db)[str(paths[0])]
        assert (first["status"], first["attempts"]) == ("queued", attempts)
        # retry_backoff · 2^(attempts − 1), from the failure's own timestamps (not from the clock now).
        backoff = 600 * 2 ** (attempts - 1)
        assert abs(_seconds_between(first["updated_at"], first["not_before"]) - backoff) < 5, first
        assert f"in {backoff}s (attempt {attempts} of 5 failed)" in result.stderr


# --------------------------------------------------- list, show, search

def test_list_show_and_search_agree_with_the_database(tmp_path, capsys):
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, 3, prefix="cam")
    footage.write_bytes(folder / "broken.mp4", b"\x00" * 1000)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    assert daemon.once(folder, db, config).returncode == 0
    rows = daemon.query(db, "SELECT * FROM jobs ORDER BY id")

    assert cli.main(["list", "--db", str(db), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [{k: v for k, v in j.items() if k != "descriptions"} for j in listed] == rows
    assert cli.main(["list", "--db", str(db), "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert str(folder / "broken.mp4") in out and str(paths[0]) not in out

    assert cli.main(["show", str(paths[1]), "--db", str(db), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    stored = daemon.query(db, "SELECT * FROM descriptions WHERE path = ?", [str(paths[1])])
    assert shown["id"] == daemon.jobs(db)[str(paths[1])]["id"]
    assert [d["text"] for d in shown["descriptions"]] == [d["text"] for d in stored]
    assert shown["descriptions"][0]["frames"] == json.loads(stored[0]["frames"])
    assert cli.main(["show", str(shown["id"]), "--db", str(db)]) == 0
    assert stored[0]["text"] in capsys.readouterr().out

    assert cli.main(["search", "cam01", "--db", str(db), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in hits] == [str(paths[1])]
    assert "[cam01]" in hits[0]["snippet"]
    assert cli.main(["search", "recording", "--db", str(db), "--json"]) == 0
    assert sorted(h["path"] for h in json.loads(capsys.readouterr().out)) == sorted(map(str, paths))
    assert cli.main(["search", 'cam02"', "--db", str(db)]) == 0         # a stray quote is harmless
    assert str(paths[2]) in capsys.readouterr().out
    assert cli.main(["search", "giraffe", "--db", str(db)]) == 1

    assert cli.main(["show", str(tmp_path / "nowhere.mp4"), "--db", str(db)]) == 2
    assert "not in the database" in capsys.readouterr().err


def test_describe_db_stores_results_and_keeps_each_prompt(tmp_path, capsys):
    clip = daemon.clip(tmp_path / "door.mp4", 3)
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    first = daemon.rkvideo("describe", clip, "--db", db, "--config", config, "--json")
    assert first.returncode == 0, first.stderr
    second = daemon.rkvideo("describe", clip, "--db", db, "--config", config, "--prompt", "Who is at the door?")
    assert second.returncode == 0, second.stderr
    dry = daemon.rkvideo("describe", clip, "--db", db, "--config", config, "--dry-run")
    assert dry.returncode == 0, dry.stderr

    assert cli.main(["show", str(clip), "--db", str(db), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "done"
    assert [d["prompt"] for d in shown["descriptions"]] == ["Describe what happens in this video.",
                                                            "Who is at the door?"]
    assert [d["source"] for d in shown["descriptions"]] == ["describe", "describe"]
    assert shown["descriptions"][0]["text"] == json.loads(first.stdout)["text"]


# ------------------------------------------------------ in-process units

def test_watchdog_pings_stop_while_the_runtime_makes_no_progress(tmp_path, monkeypatch):
    from rkvideo.daemon import Notifier
    from rkvideo.store import Job

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    notifier = Notifier()           # what the daemon's main loop reports through, once per tick
    current = Job(id=1, path="x.mp4")
    try:
        notifier.report(current, time.monotonic() - 60)         # last frame or token a minute ago
        assert "WATCHDOG=1" not in _notifications(sock)
        notifier.report(current, time.monotonic())
        assert "WATCHDOG=1" in _notifications(sock)
    finally:
        notifier.close()


def test_queueing_a_big_batch_pings_the_watchdog_between_every_two_files(tmp_path, monkeypatch):
    """A first start on a large archive: scanning and queueing must not starve the watchdog.

    WATCHDOG_USEC is 1 µs, so the rate limit (a quarter of it) never holds a ping back and every ping
    the daemon tries to send arrives. The test counts pings per file; it measures no time.
    """
    from rkvideo import config as config_mod, store
    from rkvideo.daemon import Service

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "1")
    folder = tmp_path / "cameras"
    paths = [daemon.clip(folder / f"day{n:02d}" / "0800.mp4", n) for n in range(12)]
    paths += daemon.clips(folder, 12, first=12)
    db = tmp_path / "rkvideo.db"
    jobs = store.open_store(db)
    # Not run: its watcher and intake are driven by hand, with no worker (idle) and no model.
    service = Service(config_mod.Config(), [folder], jobs, open_store=lambda: store.open_store(db))
    pings = [0]

    def counted(step, record):
        def call(path, *args):
            pings[0] += _notifications(sock).count("WATCHDOG=1")     # a local datagram arrives at once
            record.append(pings[0])
            return step(path, *args)
        return call

    scanned, queued = [], []
    watcher = service.watcher
    watcher.watch = counted(watcher.watch, scanned)
    service.intake.settled = counted(service.intake.settled, queued)
    try:
        watcher.scan(str(folder))
        for entry in watcher.pending.values():
            entry[1] -= watcher.settle              # settled already: no waiting in this test
        watcher.settle_pending()
        assert [daemon.status(db, p) for p in paths] == ["queued"] * len(paths)
    finally:
        jobs.close()
        service.notifier.close()
    assert len(scanned) == len(queued) == len(paths)
    # At least one ping between any two files, so the longest silence is one file's work, not the batch's.
    assert all(b > a for a, b in zip(scanned, scanned[1:])), scanned
    assert all(b > a for a, b in zip(queued, queued[1:])), queued


def test_the_retry_policy_goes_by_the_kind_of_error(tmp_path):
    """Interrupted: back in the queue, the attempt given back; UsageError: failed at once with the
    reason; anything else: retried after the back-off, and counted towards the failure streak."""
    from rkvideo import config as config_mod, errors, store
    from rkvideo.daemon import Roots, Worker

    clip = daemon.clip(tmp_path / "a.mp4", 0)
    st = clip.stat()
    jobs = store.open_store(tmp_path / "rkvideo.db")

    class Failing:
        error: Exception
        config = config_mod.Config()

        def describe_video(self, path, **callbacks):
            raise self.error

    describer = Failing()
    worker = Worker(open_store=lambda: jobs, describer=describer, config=config_mod.Config(),
                    roots=Roots([tmp_path]), worker_id="test", look_again=lambda path: None)
    seen = {}
    try:
        for error in (errors.Interrupted(), errors.RuntimeFailure("the NPU hung"),
                      errors.UsageError(f"{clip}: no frame could be decoded")):
            jobs.put(str(clip), store.Status.QUEUED, size=st.st_size, mtime=st.st_mtime)
            describer.error = error
            worker.run_job(jobs, jobs.claim("test"))
            job = jobs.job_at(str(clip))
            seen[type(error).__name__] = (job.status, job.attempts, job.error, job.not_before is not None)
    finally:
        jobs.close()
    assert seen == {"Interrupted": ("queued", 0, None, False),
                    "RuntimeFailure": ("queued", 1, "RuntimeFailure: the NPU hung", True),
                    "UsageError": ("failed", 1, "no frame could be decoded", False)}
    assert worker.failing == {job.id}       # only the runtime failure counts towards FAILURE_STREAK


def test_watchdog_pings_are_rate_limited(tmp_path, monkeypatch):
    from rkvideo.daemon import Notifier

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")            # 8 s: at most one ping per 2 s
    notifier = Notifier()
    now = [1000.0]
    notifier.clock = lambda: now[0]
    try:
        for _ in range(400):                                  # 400 calls over 10 s of the clock
            notifier.ping(True)
            now[0] += 0.025
    finally:
        notifier.close()
    assert _notifications(sock).count("WATCHDOG=1") == 5      # at 0, 2, 4, 6 and 8 s


def test_patterns_are_case_insensitive_and_skip_hidden_files():
    from rkvideo.daemon import Matcher
    match = Matcher(["*.mp4", "*.mkv"])
    assert match("/x/CAM1.MP4") and match("/x/a.mkv") and match("/x/b c.Mp4")
    assert not match("/x/.a.mp4.tmp") and not match("/x/.partial.mp4") and not match("/x/a.mp4.txt")


# ------------------------------------------------------- the real runtimes

@pytest.mark.cpu
def test_watch_once_with_the_self_test_models(tiny_models, tmp_path, capsys):
    """The shipped runtimes (ONNX encoder + llama.cpp) behind the daemon, no test doubles."""
    config = tiny_models.root / "watch-test.toml"        # beside the models: their paths are relative
    config.write_text(tiny_models.config.read_text() + "\n[watch]\nsettle_seconds = 0.1\n"
                      "[output]\nsidecars = [\"txt\"]\n")
    folder = tmp_path / "cameras"
    folder.mkdir()
    clip = folder / "yard.mp4"
    shutil.copyfile(tiny_models.clip, clip)
    db = tmp_path / "rkvideo.db"
    result = subprocess.run([sys.executable, "-m", "rkvideo.cli", "watch", str(folder), "--db", str(db),
                             "--config", str(config), "--once"], capture_output=True, text=True, timeout=300,
                            env=daemon.environment())
    assert result.returncode == 0, result.stderr
    job = daemon.jobs(db)[str(clip)]
    assert (job["status"], job["n"]) == ("done", 1)
    (row,) = daemon.query(db, "SELECT * FROM descriptions")
    assert row["llm_model"] == "llm.gguf" and row["frame_count"] == 4 and row["new_tokens"] > 0
    assert set(json.loads(row["timings"])) >= {"encode", "prefill", "generate", "describe"}
    assert (folder / "yard.mp4.txt").read_text().strip() == row["text"].strip()


# --------------------------------------------------------------- systemd

def test_a_missing_folder_is_retried_by_systemd_and_a_file_is_a_usage_error(tmp_path):
    """A late NFS or USB mount: exit status 1 (restarted), never the no-restart status 2."""
    config = daemon.write_config(tmp_path)
    db = tmp_path / "rkvideo.db"
    missing = daemon.once(tmp_path / "not mounted", db, config)
    assert missing.returncode == cli.EXIT_RUNTIME, missing.stderr
    assert "folder not found (not mounted yet?" in missing.stderr
    not_a_folder = footage.write_bytes(tmp_path / "file.mp4", b"x")
    wrong = daemon.once(not_a_folder, db, config)
    assert wrong.returncode == cli.EXIT_USAGE and "not a folder" in wrong.stderr
    unit = (ROOT / "systemd" / "rkvideo.service").read_text()
    assert "#RequiresMountsFor=" in unit and f"RestartPreventExitStatus={cli.EXIT_USAGE}" in unit


def test_service_file_verifies_and_matches_the_daemon(tmp_path):
    unit = (ROOT / "systemd" / "rkvideo.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and settings["Restart"] == "on-failure"
    assert int(settings["WatchdogSec"]) > 0 and settings["User"] == "rkvideo"
    assert settings["RestartPreventExitStatus"] == str(cli.EXIT_USAGE)
    assert " watch " in settings["ExecStart"]
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    # Verify a copy whose ExecStart names an existing program (the real one is installed later).
    copy = tmp_path / "rkvideo.service"
    copy.write_text(unit.replace("/opt/rkvideo/bin/rkvideo", sys.executable))
    check = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
