"""Several daemons, one PostgreSQL queue: does throughput grow with the number of workers?

Usage:  python benchmarks/scale.py [--clips 200] [--seconds 0.5] [--workers 1,2,4,8]

For each worker count N, on a fresh database of a throwaway PostgreSQL server
(started here on 127.0.0.1 with its default durability: fsync and synchronous
commits on), the same 200 small clips are queued and N real `rkvideo watch
--once` processes share them. The runtime is the test double with a fixed
time per job (``--seconds``, default 0.5 s: it waits, it does not compute, so
2 cores can stand in for 8 boards); the clips are really decoded.

Timing: every daemon's first job waits at a gate; once all N hold one (and
their fixed time has passed) the gate opens, so start-up never counts. Those
first N jobs then end at once, so throughput is the other 200 - N jobs over
the time from the gate to the last commit. Speed-up is against N = 1 in the
same run. Coordination overhead per job is what the worker spends in the
queue's claim and finish calls (its log line: "queue X ms"); the median over
all jobs of a run. Targets: >= 3.6x with 4 workers, >= 6.5x with 8,
coordination <= 10 ms.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

QUEUE = re.compile(r"\(queue ([0-9.]+) ms\)")


def make_clips(count: int) -> list:
    """The clips of benchmarks/daemon.py (same cache)."""
    spec = importlib.util.spec_from_file_location("bench_daemon", ROOT / "benchmarks" / "daemon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_clips(count)


def facts(clips: list) -> list:
    """What intake records per clip (size, mtime, fingerprint, duration), measured once."""
    from rkvideo import media, store
    return [(str(c), c.stat().st_size, c.stat().st_mtime, store.fingerprint(c), media.probe(c).duration)
            for c in clips]


def fill(url: str, folder: Path, known: list) -> None:
    """Queue every clip as intake would have (the daemons then find each file known)."""
    from rkvideo import store
    with store.open_store(url, roots={folder.name: folder}) as db:
        for path, size, mtime, digest, duration in known:
            db.put(path, store.Status.QUEUED, root=str(folder), size=size, mtime=mtime, digest=digest,
                   duration=duration)


def rows(url: str, query: str) -> list:
    import psycopg
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def wait(condition, procs, what: str, timeout: float = 900) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        for proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                raise SystemExit(f"a daemon exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def run(server, workers: int, folder: Path, config: Path, known: list, seconds: float, work: Path) -> dict:
    url = server.database()
    fill(url, folder, known)
    gate = work / f"gate{workers}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RKVIDEO_", "NOTIFY_SOCKET"))}
    env.update(RKVIDEO_FAKE_GENERATE_SECONDS=str(seconds), RKVIDEO_FAKE_GATE=str(gate))
    logs = [open(work / f"log{workers}-{n}", "w+") for n in range(workers)]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "doubles" / "run_daemon.py"), "watch",
                               str(folder), "--db", url, "--config", str(config), "--once"],
                              env=env, stdout=log, stderr=log) for log in logs]
    try:
        running = "SELECT count(*) FROM jobs WHERE status = 'running'"
        wait(lambda: rows(url, running)[0][0] == workers, procs, f"{workers} workers to hold a job")
        time.sleep(seconds)      # the first jobs' fixed time passes behind the gate (see the docstring)
        opened = time.time()
        gate.touch()
        for proc in procs:
            if proc.wait(900) != 0:
                raise SystemExit(f"a daemon failed: see {work}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    done, last = rows(url, "SELECT count(*), max(finished_at) FROM jobs WHERE status = 'done'")[0]
    if done != len(known):
        raise SystemExit(f"{workers} workers: {done} of {len(known)} clips done")
    span = datetime.fromisoformat(last).timestamp() - opened
    coordination = []
    for log in logs:
        log.seek(0)
        coordination += [float(ms) for ms in QUEUE.findall(log.read())]
        log.close()
    return {"workers": workers, "jobs": len(known) - workers, "span": span,
            "throughput": (len(known) - workers) / span, "coordination": statistics.median(coordination),
            "coordination_p90": statistics.quantiles(coordination, n=10)[-1], "measured": len(coordination)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="clips in the queue (default 200)")
    parser.add_argument("--seconds", type=float, default=0.5, help="fixed runtime time per job (default 0.5)")
    parser.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated (default 1,2,4,8)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (daemon logs) and print it")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    from doubles import daemon, postgres
    print(f"making {args.clips} clips ...", flush=True)
    clips = make_clips(args.clips)
    work = Path(tempfile.mkdtemp(prefix="rkvideo-scale-"))
    folder = work / "cameras"
    folder.mkdir()
    for clip in clips:
        os.link(clip, folder / clip.name) if clip.stat().st_dev == folder.stat().st_dev else \
            folder.joinpath(clip.name).write_bytes(clip.read_bytes())
    known = facts(sorted(folder.iterdir()))
    config = daemon.write_config(work, sidecars=())       # the test-double runtime, 4 frames per clip
    server = postgres.start_server(settings="")      # the server's defaults: fsync and synchronous commit on
    results = []
    try:
        version = server.sql("SHOW server_version")[0]["server_version"].split()[0]
        print(f"{args.clips} clips, {args.seconds} s per job, PostgreSQL {version} on 127.0.0.1 (fsync on)", flush=True)
        for n in counts:
            results.append(run(server, n, folder, config, known, args.seconds, work))
            r = results[-1]
            print(f"  {n} worker(s): {r['jobs']} jobs in {r['span']:.2f} s", flush=True)
    finally:
        server.stop()
    base = results[0]["throughput"] if results[0]["workers"] == 1 else None
    print("\n| workers | jobs/s | speed-up vs 1 | ideal | coordination per job (median) | p90 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        speedup = f"{r['throughput'] / base:.2f}×" if base else "—"
        print(f"| {r['workers']} | {r['throughput']:.2f} | {speedup} | {r['workers']}× | "
              f"{r['coordination']:.1f} ms | {r['coordination_p90']:.1f} ms |")
    targets = {4: 3.6, 8: 6.5}
    for r in results:
        if base and r["workers"] in targets:
            ok = r["throughput"] / base >= targets[r["workers"]]
            print(f"target >= {targets[r['workers']]}× with {r['workers']} workers: {'OK' if ok else 'MISSED'}")
    worst = max(r["coordination"] for r in results)
    print(f"target coordination <= 10 ms per job (worst median {worst:.1f} ms): {'OK' if worst <= 10 else 'MISSED'}")
    if args.keep:
        print(f"daemon logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
