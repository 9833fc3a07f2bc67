"""Several `rkvideo watch` processes on one PostgreSQL database: exactly once through kill -9 and cut
connections, draining, boards that mount the share at different places, and the reading commands.

Real daemon processes (tests/doubles/daemon.py, the test-double runtime) and a real server
(tests/doubles/postgres.py). Waiting is always polling for a condition with a deadline.

Attempts, by design: a claim counts an attempt; a worker killed (or whose session is cut) while it
runs a job loses that attempt, and the job is given back by another daemon's sweep — the log line
"interrupted last time, queued again (worker W is gone)" records each such recovery.
"""
import json
import os
import random
import re
import signal
import socket
from collections import Counter

import pytest
from doubles import daemon
from doubles.postgres import jobs, pg_url, postgres, sessions_of  # noqa: F401 - fixtures

CLIPS = 30
HOST = socket.gethostname()
RECOVERED = re.compile(r"\[job (\d+)\]: interrupted last time, queued again \(worker (\S+) is gone\)")


def all_done(url, paths):
    table = jobs(url)
    return len(table) == len(paths) and all(j["status"] == "done" for j in table.values())


def done_count(url) -> int:
    return sum(j["status"] == "done" for j in jobs(url).values())


def worker_of(url, pid: int) -> str:
    """The worker id (host:pid:random) a daemon process reported."""
    ids = [w["id"] for w in json.loads(daemon.rkvideo("workers", "--db", url, "--json").stdout)]
    return next((i for i in ids if i.startswith(f"{HOST}:{pid}:")), "")


def test_three_daemons_describe_every_clip_exactly_once_through_random_kill_9(tmp_path, pg_url):
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, CLIPS)
    config = daemon.write_config(tmp_path, max_attempts=20, sidecars=())
    env = daemon.environment(RKVIDEO_FAKE_GENERATE_SECONDS=0.3, RKVIDEO_TEST_REPORT=0.2)
    rng = random.Random(13)
    procs = [daemon.start(folder, pg_url, config, env=env) for _ in range(3)]
    logs, dead = [], []
    try:
        # Six kills at random moments of the run (after a random number of recordings is done), each of a
        # random daemon, which is started again at once.
        for target in sorted(rng.sample(range(1, CLIPS - 4), 6)):
            daemon.wait_for(lambda t=target: done_count(pg_url) >= t, what=f"{target} recordings done", timeout=60)
            victim = rng.randrange(3)
            pid = procs[victim].pid
            logs.append(daemon.kill(procs[victim]))
            daemon.wait_for(lambda p=pid: sessions_of(pg_url, p) == 0, what="the killed daemon's sessions to end")
            dead.append(worker_of(pg_url, pid))      # "" when killed while starting, before it took a job
            procs[victim] = daemon.start(folder, pg_url, config, env=env)
        daemon.wait_for(lambda: all_done(pg_url, paths), what="every recording done", timeout=60)
        # The last one started may still be loading: SIGTERM stops it cleanly once it runs.
        daemon.wait_for(lambda: all(worker_of(pg_url, p.pid) for p in procs), what="every daemon running")
    finally:
        for proc in procs:
            code, err = daemon.stop(proc)
            logs.append(err)
            assert code == 0, err
    table = jobs(pg_url)
    assert sorted(table) == sorted(str(p) for p in paths)
    assert {j["status"] for j in table.values()} == {"done"}          # none stuck running
    assert [j["n"] for j in table.values()] == [1] * CLIPS             # exactly one description each
    recovered = [(int(job), worker) for log in logs for job, worker in RECOVERED.findall(log)]
    # Only jobs of killed workers were given back, each dead worker's one job at most once...
    assert {worker for _, worker in recovered} <= set(dead) - {""}
    assert len(recovered) == len(set(recovered)) and max(Counter(w for _, w in recovered).values()) == 1
    assert recovered, "no kill landed while a job ran"
    # ...and each one cost exactly that attempt.
    lost = Counter(job for job, _ in recovered)
    assert {j["id"]: j["attempts"] for j in table.values()} == {j["id"]: 1 + lost[j["id"]] for j in table.values()}


def test_a_worker_whose_connection_is_cut_mid_job_loses_only_that_attempt(tmp_path, postgres, pg_url):
    from rkvideo.store.postgres import JOB_LOCKS
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, 3)
    config = daemon.write_config(tmp_path, sidecars=())
    gate = tmp_path / "gate"
    env = daemon.environment(RKVIDEO_FAKE_GATE=gate, RKVIDEO_TEST_REPORT=0.2)
    proc = daemon.start(folder, pg_url, config, env=env)
    database = pg_url.rsplit("/", 1)[1]

    def holder():
        """(job id, server process) of the running job's claim."""
        rows = postgres.sql("SELECT objid::int AS job, pid FROM pg_locks WHERE locktype = 'advisory' AND "
                            "classid = %s AND objsubid = 2 AND granted", [JOB_LOCKS], database=database)
        return (rows[0]["job"], rows[0]["pid"]) if rows else None

    try:
        job_id, backend = daemon.wait_for(holder, proc, "a job to be claimed")
        postgres.sql("SELECT pg_terminate_backend(%s, 10000)", [backend])
        gate.touch()                        # the runtime finishes; the commit meets a closed session
        daemon.wait_for(lambda: all_done(pg_url, paths), proc, "every recording done")
        assert proc.poll() is None          # the same daemon went on: no restart, no model reload
    finally:
        code, err = daemon.stop(proc)
    assert code == 0, err
    assert f"[job {job_id}]" in err and "was given back while it was described" in err
    table = {j["id"]: j for j in jobs(pg_url).values()}
    assert {i: (j["attempts"], j["n"]) for i, j in table.items()} == {
        i: (2 if i == job_id else 1, 1) for i in table}


def test_a_drained_daemon_finishes_its_job_and_takes_no_new_one(tmp_path, pg_url):
    folder = tmp_path / "cameras"
    daemon.clips(folder, 3)
    config = daemon.write_config(tmp_path, sidecars=())
    gate = tmp_path / "gate"
    proc = daemon.start(folder, pg_url, config, env=daemon.environment(RKVIDEO_FAKE_GATE=gate,
                                                                       RKVIDEO_TEST_REPORT=0.2))
    try:
        running = daemon.wait_for(lambda: [j for j in jobs(pg_url).values() if j["status"] == "running"], proc,
                                  "a job to run")
        shown = daemon.rkvideo("workers", "--db", pg_url)
        assert shown.returncode == 0, shown.stderr
        line = next(line for line in shown.stdout.splitlines() if line.startswith(f"{HOST}:{proc.pid}:"))
        assert " running " in line and running[0]["path"] in line and " ago " in line
        asked = daemon.rkvideo("watch", "--drain", "--db", pg_url)
        assert asked.returncode == 0 and f"{HOST}:{proc.pid}:" in asked.stdout, asked.stderr
        daemon.wait_for(lambda: '"draining"' in daemon.rkvideo("workers", "--db", pg_url, "--json").stdout, proc,
                        "the daemon to report that it drains")
        gate.touch()
        assert proc.wait(30) == 0
    finally:
        code, err = daemon.stop(proc)
    assert "draining: finishing the current job" in err and code == 0
    statuses = Counter(j["status"] for j in jobs(pg_url).values())
    assert statuses == {"done": 1, "queued": 2}
    (worker,) = json.loads(daemon.rkvideo("workers", "--db", pg_url, "--json").stdout)
    assert (worker["state"], worker["job_id"]) == ("stopped", None)
    nobody = daemon.rkvideo("workers", "--db", pg_url, "--drain", "no-such-host")
    assert nobody.returncode == 2 and "no running worker" in nobody.stderr


def test_sigusr1_drains_a_daemon_on_sqlite_too(tmp_path):
    folder = tmp_path / "cameras"
    daemon.clips(folder, 3)
    config = daemon.write_config(tmp_path, sidecars=())
    db, gate = tmp_path / "rkvideo.db", tmp_path / "gate"
    proc = daemon.start(folder, db, config, env=daemon.environment(RKVIDEO_FAKE_GATE=gate, RKVIDEO_TEST_REPORT=0.2))
    try:
        daemon.wait_for(lambda: [j for j in daemon.jobs(db).values() if j["status"] == "running"], proc, "a job")
        proc.send_signal(signal.SIGUSR1)
        daemon.wait_for(lambda: '"draining"' in daemon.rkvideo("workers", "--db", db, "--json").stdout, proc,
                        "the daemon to drain")
        gate.touch()
        assert proc.wait(30) == 0
    finally:
        daemon.stop(proc)
    assert Counter(j["status"] for j in daemon.jobs(db).values()) == {"done": 1, "queued": 2}


def test_boards_that_mount_the_share_at_different_places_describe_each_recording_once(tmp_path, pg_url):
    """Two boards, each with the share under another path (here: two identical folders), name it alike."""
    procs, boards = [], []
    for board in ("a", "b"):
        share = tmp_path / board / "mnt" / "share"
        for n, clip in enumerate(daemon.clips(share / "door", 6)):
            os.utime(clip, (1_700_000_000 + n, 1_700_000_000 + n))      # one file seen twice: one mtime
        (tmp_path / board / "conf").mkdir()
        boards.append((share, daemon.write_config(tmp_path / board / "conf", sidecars=(),
                                                  roots={"cameras": share})))
    env = daemon.environment(RKVIDEO_FAKE_GENERATE_SECONDS=0.1)
    for _, config in boards:
        procs.append(daemon.start([], pg_url, config, env=env))     # no DIR: the [watch] roots
    try:
        daemon.wait_for(lambda: len(jobs(pg_url)) == 6 and all_done(pg_url, range(6)), what="six recordings done")
    finally:
        for proc in procs:
            code, err = daemon.stop(proc)
            assert code == 0, err
    table = jobs(pg_url)
    assert sorted((j["root"], j["relpath"], j["n"]) for j in table.values()) == [
        ("cameras", f"door/clip{n:02d}.mp4", 1) for n in range(6)]
    # Each board lists the recordings under its own paths.
    for share, config in boards:
        listed = json.loads(daemon.rkvideo("list", "--db", pg_url, "--config", config, "--json").stdout)
        assert sorted(j["path"] for j in listed) == [str(share / "door" / f"clip{n:02d}.mp4") for n in range(6)]


def test_list_show_search_retry_and_describe_work_on_postgresql(tmp_path, pg_url):
    folder = tmp_path / "cameras"
    paths = daemon.clips(folder, 2)
    config = daemon.write_config(tmp_path, sidecars=())
    result = daemon.once(folder, pg_url, config)
    assert result.returncode == 0, result.stderr
    listed = daemon.rkvideo("list", "--db", pg_url)
    assert listed.returncode == 0 and "2 jobs: 2 done" in listed.stderr
    assert all(str(p) in listed.stdout for p in paths)
    found = daemon.rkvideo("search", "clip01", "--db", pg_url, "--json")
    assert [h["path"] for h in json.loads(found.stdout)] == [str(paths[1])]
    shown = daemon.rkvideo("show", str(paths[0]), "--db", pg_url, "--json")
    assert json.loads(shown.stdout)["descriptions"][0]["source"] == "watch"
    again = daemon.rkvideo("retry", str(paths[0]), "--db", pg_url)
    assert again.returncode == 0 and "1 job queued again" in again.stdout
    extra = daemon.clip(tmp_path / "elsewhere" / "extra.mp4", 7)
    described = daemon.rkvideo("describe", extra, "--db", pg_url, "--config", config)
    assert described.returncode == 0, described.stderr
    assert jobs(pg_url)[str(extra)]["n"] == 1
    missing = daemon.rkvideo("list", "--db", pg_url.rsplit("/", 1)[0] + "/nosuchdb")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize("names", [["cams", "cams"]])
def test_two_watched_folders_with_one_name_are_refused_on_a_shared_database(tmp_path, pg_url, names):
    folders = [tmp_path / "a" / names[0], tmp_path / "b" / names[1]]
    for f in folders:
        f.mkdir(parents=True)
    config = daemon.write_config(tmp_path, sidecars=())
    refused = daemon.rkvideo("watch", *folders, "--db", pg_url, "--config", config, "--once")
    assert refused.returncode == 2 and "both named 'cams'" in refused.stderr
