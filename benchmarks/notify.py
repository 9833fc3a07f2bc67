"""Do notifications slow describing down, and how soon do messages arrive?

Usage:  python benchmarks/notify.py [--clips 200] [--repeat 3]

Runs the real ``rkvideo watch`` (zero-latency test-double runtime, as
benchmarks/daemon.py does) three times on N new small clips dropped at once,
in one run so the numbers compare:

* baseline: no ``[notify]``;
* delivering: MQTT to a local Mosquitto broker (from the system packages) and a
  webhook to a local HTTP server, both on 127.0.0.1;
* broker down: MQTT to a port where nothing listens (every message waits in
  the outbox, the sender retries).

The three are repeated ``--repeat`` times, interleaved, so that a busy
machine affects them alike. Printed per mode (best of the repeats): files per
second, the daemon's CPU time per file (all its threads, the sender's
included: what notifications cost in CPU) and the median daemon overhead per
file outside the runtime (see benchmarks/daemon.py), each as a ratio to the
baseline; for "delivering" the delay from a description's commit to its
arrival at an MQTT subscriber and at the web server (median, p90, max); for
"broker down" the rows left in the outbox. Target: describing is not slowed
(ratios near 1.0; on the board a request takes 15-35 s, so a millisecond per
file is nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import daemon as bench  # noqa: E402  benchmarks/daemon.py: clips, waiting, per-round statistics


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(name: str, clips: list, notify: str, settle: float, on_ready=None) -> tuple[dict, Path, Path]:
    """One daemon over ``clips``; returns (statistics, database, work folder)."""
    from doubles import fake_runtime
    work = Path(tempfile.mkdtemp(prefix=f"rkvideo-bench-notify-{name}-"))
    folder, staging, db = work / "cameras", work / "staging", work / "rkvideo.db"
    folder.mkdir()
    staging.mkdir()
    vision, llm = fake_runtime.write_models(work)
    config = work / "config.toml"
    config.write_text(bench.CONFIG.format(vision=vision, llm=llm, settle=settle, sidecars="[]") + notify)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(work / "notify"))
    sock.settimeout(120)
    log = open(work / "daemon.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "doubles" / "run_daemon.py"), "watch",
                             str(folder), "--db", str(db), "--config", str(config)],
                            env={**os.environ, "NOTIFY_SOCKET": str(work / "notify")}, stdout=log, stderr=log)
    try:
        while b"READY=1" not in sock.recv(4096):
            pass
        time.sleep(1.0)     # imports and the start-up scan done before the clock starts
        for clip in clips:
            shutil.copyfile(clip, staging / clip.name)
        cpu = cpu_seconds(proc.pid)
        for clip in clips:
            os.rename(staging / clip.name, folder / clip.name)
        bench.wait(lambda: bench.done_count(db) >= len(clips), proc, f"{name}: every clip")
        stats = {**bench.round_stats(db, 1), "cpu": (cpu_seconds(proc.pid) - cpu) / len(clips)}
        if on_ready:
            on_ready(db, proc)
        return stats, db, work
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        sock.close()


def delays(commits: dict, arrivals: dict) -> str:
    """Commit → arrival per message id: median, p90, max in ms."""
    values = sorted(arrivals[m] - commits[m] for m in commits if m in arrivals)
    if not values:
        return "nothing arrived"
    p90 = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
    return (f"{len(values)} messages, median {statistics.median(values) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
            f"max {values[-1] * 1000:.0f} ms")


def commits(db: Path) -> dict:
    """Message id → when its description was committed (the job's finished_at)."""
    import sqlite3
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT d.id, j.finished_at FROM descriptions d JOIN jobs j ON j.id = d.job_id").fetchall()
    conn.close()
    return {d: bench.stamp(finished) for d, finished in rows}


def delivering(clips: list, settle: float, broker, receiver) -> tuple[dict, str, str]:
    """The "delivering" run: its statistics and the commit-to-arrival delays."""
    from doubles import mosquitto
    receiver.requests.clear()
    sub = mosquitto.Subscriber(broker, ("rkvideo/events",))
    arrived: dict = {}
    record = sub.client.on_message

    def stamp_arrival(client, userdata, message):
        arrived[json.loads(message.payload)["description_id"]] = time.time()
        record(client, userdata, message)

    sub.client.on_message = stamp_arrival

    def all_delivered(db, proc):
        bench.wait(lambda: len(arrived) >= len(clips) and len(receiver.accepted()) >= len(clips), proc,
                   "every message delivered")

    notify = (f'[notify]\nmqtt = "{broker.url()}"\nwebhooks = [{{ url = "{receiver.url}", secret = "s" }}]\n'
              'retry_backoff = 0.1\n')
    try:
        stats, db, work = run("delivering", clips, notify, settle, all_delivered)
    finally:
        sub.close()
    made = commits(db)
    hooked = {json.loads(r["body"])["description_id"]: r["at"] for r in receiver.accepted()}
    shutil.rmtree(work, ignore_errors=True)
    return stats, delays(made, arrived), delays(made, hooked)


def broker_down(clips: list, settle: float) -> tuple[dict, int]:
    """The "broker down" run: its statistics and the rows left in the outbox."""
    import sqlite3

    from doubles import mosquitto
    down = f'[notify]\nmqtt = "mqtt://127.0.0.1:{mosquitto.free_port()}"\nretry_backoff = 0.1\nretry_max = 1\n'
    stats, db, work = run("broker-down", clips, down, settle)
    conn = sqlite3.connect(db)
    left = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    conn.close()
    shutil.rmtree(work, ignore_errors=True)
    return stats, left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="clips per run (default 200)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each mode, interleaved (default 3)")
    parser.add_argument("--settle", type=float, default=0.5, help="watch.settle_seconds (default 0.5)")
    args = parser.parse_args()
    from doubles import mosquitto
    from doubles.webhooks import Receiver

    print(f"making {args.clips} clips (cached in {bench.CACHE}) ...", flush=True)
    clips = bench.make_clips(args.clips)        # every run has a database of its own: the same clips do
    results: dict = {"baseline": [], "delivering": [], "broker down": []}
    latency, left = [], []
    broker = mosquitto.Broker(Path(tempfile.mkdtemp(prefix="rkvideo-bench-broker-"))).start()
    receiver = Receiver()
    try:
        for n in range(args.repeat):
            print(f"round {n + 1} of {args.repeat} ...", flush=True)
            stats, _, work = run("baseline", clips, "", args.settle)
            shutil.rmtree(work, ignore_errors=True)
            results["baseline"].append(stats)
            stats, to_mqtt, to_hook = delivering(clips, args.settle, broker, receiver)
            results["delivering"].append(stats)
            latency.append((to_mqtt, to_hook))
            stats, rows = broker_down(clips, args.settle)
            results["broker down"].append(stats)
            left.append(rows)
    finally:
        receiver.close()
        broker.stop()
        shutil.rmtree(broker.folder, ignore_errors=True)

    def best(runs: list) -> dict:
        return {"rate": max(s["files"] / s["span"] for s in runs), "cpu": min(s["cpu"] for s in runs),
                "overhead": min(s["overhead"] for s in runs)}

    base = best(results["baseline"])
    print(f"\n{args.clips} clips per run, zero-latency runtime, settle {args.settle}s, best of {args.repeat}")
    print(f"{'mode':<12} {'files/s':>8} {'ratio':>6} {'CPU ms/file':>12} {'ratio':>6} {'overhead ms':>12} {'ratio':>6}")
    for name, runs in results.items():
        b = best(runs)
        ratios = {k: b[k] / base[k] for k in b}
        print(f"{name:<12} {b['rate']:>8.1f} {ratios['rate']:>5.2f}x {b['cpu'] * 1000:>12.2f} {ratios['cpu']:>5.2f}x "
              f"{b['overhead'] * 1000:>12.2f} {ratios['overhead']:>5.2f}x")
    for n, (to_mqtt, to_hook) in enumerate(latency, 1):
        print(f"delivering, round {n}: commit -> MQTT subscriber: {to_mqtt}; -> webhook server: {to_hook}")
    print(f"broker down: outbox rows left per round {left} ({args.clips} messages x 3 topics expected)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
