"""How fast does ``rkvideo serve`` answer on a big archive, and does its memory stay flat?

Usage:  python benchmarks/web.py [--descriptions 100000] [--events 500000] [--repeat 40] [--requests 1000]

Fills a database (cached under benchmarks/.cache/web/, made again when the sizes
change) with N recordings in 12 camera folders, one description each and M
moments (events) spread over them, of camera-like captions from a fixed
vocabulary: common words ("car", "person", "driveway") are in a large share of
the rows, rare ones ("giraffe", "ambulance") in a handful. Four thumbnail rows
per description. Rows go in with ``executemany`` in one transaction; the FTS5
indexes are filled by the schema's own triggers.

Then it starts the real ``rkvideo serve`` on a free 127.0.0.1 port and measures,
per request, the server's own time (its ``Server-Timing: app;dur=`` header, from
the request reaching the application to the response starting):

* the search endpoint (``/api/search`` and the HTML page ``/?q=``) for common and
  rare words, and one with a folder filter: p50 and p95;
* the home page (newest recordings), a recording page and the jobs page;
* the same search in this process through the store (``JobStore.browse``:
  ranking, snippets, details) against the baseline, in the same run: the words
  ranked over *every* match (bm25 for all rows that contain them, as a plain
  FTS5 ``ORDER BY rank`` does; ranking only, no snippets), timed in SQLite
  directly; the ratio shows what ranking only the newest matches
  (``store.browse.RANK_WINDOW``) saves;
* the server's resident memory (VmRSS) every 100 of ``--requests`` mixed
  requests: it should stay flat.

Targets on this machine: search p95 ≤ 50 ms, pages ≤ 100 ms, memory flat.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache" / "web"
sys.path.insert(0, str(ROOT / "src"))

from rkvideo import store  # noqa: E402

CAMERAS = ["door", "driveway", "garden", "garage", "street", "backyard", "porch", "gate", "parking", "shed",
           "side", "roof"]
SUBJECTS = ["a person", "a man", "a woman", "a child", "two people", "a delivery driver", "a postman", "a dog",
            "a cat", "a red car", "a white van", "a black car", "a silver car", "a truck", "a cyclist", "a bus",
            "a fox", "a bird", "a neighbour", "a jogger"]
ACTIONS = ["walks across", "stands near", "drives into", "parks in", "leaves", "approaches", "runs through",
           "waits at", "looks at", "carries a parcel to", "opens", "closes", "passes", "stops at", "turns into"]
PLACES = ["the driveway", "the front door", "the garden", "the street", "the gate", "the garage", "the porch",
          "the parking lot", "the sidewalk", "the backyard", "the fence", "the mailbox", "the lawn"]
EXTRAS = ["It is raining.", "The light is dim.", "Shadows move on the wall.", "Leaves blow across the ground.",
          "Nothing else happens.", "The scene is quiet.", "Headlights sweep across the frame.",
          "A bird flies past.", "The street lamps are on.", "Snow covers the ground.", "The sun is low."]
RARE = ["giraffe", "ambulance", "helicopter", "firefighter", "wheelbarrow", "kangaroo"]

COMMON_QUERIES = ["car", "person", "driveway", "red car", "walks"]
RARE_QUERIES = ["giraffe", "ambulance", "helicopter"]


def sentence(rng: random.Random) -> str:
    text = f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(ACTIONS)} {rng.choice(PLACES)}."
    if rng.random() < 0.0004:
        text += f" A {rng.choice(RARE)} is visible."
    return text


def caption(rng: random.Random, sentences: int) -> str:
    return " ".join([sentence(rng) for _ in range(sentences)] + [rng.choice(EXTRAS)])


# ------------------------------------------------------------------ the archive

def build(db: Path, descriptions: int, events: int) -> None:
    for old in db.parent.glob(db.name + "*"):
        if old.is_file():
            old.unlink()
    store.open_store(db).close()            # the schema, through the store's own migrations
    rng = random.Random(12)
    start = 1_700_000_000.0
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO jobs (id, path, size, mtime, hash, duration, status, attempts, created_at, updated_at, "
        "finished_at, root) VALUES (?, ?, ?, ?, ?, ?, 'done', 1, ?, ?, ?, '/srv/cameras')",
        ((i, f"/srv/cameras/{CAMERAS[i % 12]}/{time.strftime('%Y-%m-%d_%H%M%S', time.gmtime(start + 60 * i))}.mp4",
          20_000_000, start + 60 * i, f"{i:064x}", 600.0, "2024", "2024", "2024") for i in range(1, descriptions + 1)))
    frames = json.dumps([{"index": k, "pts": k * 1000, "seconds": 75.0 * k + 37.5, "source": "x"} for k in range(8)])
    conn.executemany(
        "INSERT INTO descriptions (id, job_id, path, hash, kind, inputs, text, model, vision_model, llm_model, "
        "prompt, frames, frame_count, prompt_tokens, vision_tokens, new_tokens, timings, notes, source, created_at) "
        "VALUES (?, ?, '', '', 'video', '[]', ?, 'qwen2-vl-2b', 'v.rknn', 'l.rkllm', "
        "'Describe what happens in this video.', ?, 8, 120, 1568, 90, '{\"generate\": 12.5}', '[]', 'watch', "
        "'2024-05-01T08:00:00+00:00')",
        ((i, i, caption(rng, rng.randint(2, 5)), frames) for i in range(1, descriptions + 1)))
    per = max(events // descriptions, 1)
    conn.executemany(
        "INSERT INTO events (job_id, description_id, start_s, end_s, text, frames, score, created_at) "
        "VALUES (?, ?, ?, ?, ?, '[]', 0.5, '2024-05-01T08:00:00+00:00')",
        ((i // per + 1, i // per + 1, 100.0 * (i % per), 100.0 * (i % per) + 12.0, caption(rng, 1))
         for i in range(min(events, per * descriptions))))
    conn.executemany(
        "INSERT INTO thumbnails (description_id, seq, seconds, path, created_at) VALUES (?, ?, ?, ?, '2024')",
        ((d, k, 75.0 * k + 37.5, f"{d // 1000:04d}/{d}-{k}.jpg") for d in range(1, descriptions + 1) for k in range(4)))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def archive(descriptions: int, events: int) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    db = CACHE / f"web-{descriptions}-{events}.db"
    if not db.exists():
        t0 = time.perf_counter()
        print(f"filling {db} with {descriptions} descriptions and {events} events …", flush=True)
        build(db, descriptions, events)
        print(f"  filled in {time.perf_counter() - t0:.1f} s", flush=True)
    return db


# ------------------------------------------------------------------ the server

class Server:
    def __init__(self, db: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "rkvideo", "serve", "--db", str(db), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.port = None
        found = threading.Event()

        def read():
            for line in self.proc.stdout:
                match = re.search(r" at http://127\.0\.0\.1:(\d+)/", line)
                if match:
                    self.port = int(match.group(1))
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60):
            self.proc.kill()
            raise SystemExit("rkvideo serve did not start")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def get(self, path: str) -> float:
        """The server's milliseconds for one GET (Server-Timing)."""
        self.conn.request("GET", path)
        answer = self.conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"GET {path}: {answer.status}")
        return float(re.search(r"app;dur=([\d.]+)", answer.getheader("server-timing")).group(1))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(30)


def percentiles(times: list) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def browse_ms(db: Path, query: str, repeat: int) -> float:
    """``JobStore.browse`` in this process: a first page of results, complete (median ms)."""
    jobs = store.open_store(db, create=False, readonly=True)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jobs.browse(query, store.Filters(), 21, 0)
        times.append((time.perf_counter() - t0) * 1000)
    jobs.close()
    return statistics.median(times)


def full_rank_ms(db: Path, query: str, repeat: int) -> tuple[float, int]:
    """The baseline: every match of both tables ranked by bm25, a page of 21 taken (median ms, matches)."""
    conn = sqlite3.connect(db)
    match = " ".join(f'"{w}"' for w in query.split())
    sql = ("SELECT * FROM (SELECT 'e', rowid, rank AS r FROM events_fts WHERE events_fts MATCH ?1 UNION ALL "
           "SELECT 'd', rowid, rank FROM descriptions_fts WHERE descriptions_fts MATCH ?1) ORDER BY r LIMIT 21")
    counting = ("SELECT (SELECT count(*) FROM events_fts WHERE events_fts MATCH ?1) + "
                "(SELECT count(*) FROM descriptions_fts WHERE descriptions_fts MATCH ?1)")
    (count,) = conn.execute(counting, [match]).fetchone()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        conn.execute(sql, [match]).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--descriptions", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=40, help="requests per measured URL")
    parser.add_argument("--requests", type=int, default=1000, help="mixed requests for the memory check")
    args = parser.parse_args()
    db = archive(args.descriptions, args.events)
    server = Server(db)
    try:
        for _ in range(5):      # warm the page cache and the imports
            server.get("/")
        rows = []
        for kind, queries in (("common", COMMON_QUERIES), ("rare", RARE_QUERIES)):
            for query in queries:
                api = [server.get("/api/search?" + urlencode({"q": query})) for _ in range(args.repeat)]
                page = [server.get("/?" + urlencode({"q": query})) for _ in range(args.repeat)]
                baseline, matches = full_rank_ms(db, query, max(3, args.repeat // 4))
                ours = browse_ms(db, query, max(3, args.repeat // 4))
                rows.append((kind, query, matches, ours, baseline, *percentiles(api), *percentiles(page)))
        filtered = [server.get("/api/search?" + urlencode({"q": "car", "folder": "/srv/cameras/garden"}))
                    for _ in range(args.repeat)]
        day = time.strftime("%Y-%m-%d", time.localtime(1_700_000_000 + 30 * 86400))
        one_day = [server.get("/api/search?" + urlencode({"q": "car", "from": day, "to": day}))
                   for _ in range(args.repeat)]
        print()
        print("| words | query | matches | JobStore.browse ms | full ranking ms (baseline) | ÷ baseline "
              "| /api/search p50 ms | p95 ms | search page p50 ms | p95 ms |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for kind, query, matches, ours, baseline, a50, a95, p50, p95 in rows:
            print(f"| {kind} | {query} | {matches} | {ours:.1f} | {baseline:.1f} | {ours / baseline:.2f}× "
                  f"| {a50:.1f} | {a95:.1f} | {p50:.1f} | {p95:.1f} |")
        f50, f95 = percentiles(filtered)
        print(f"| common, one folder | car + folder=/srv/cameras/garden | | | | | {f50:.1f} | {f95:.1f} | | |")
        d50, d95 = percentiles(one_day)
        print(f"| common, one day | car + from={day}&to={day} | | | | | {d50:.1f} | {d95:.1f} | | |")
        print()
        pages = {"home page (newest recordings)": "/", "home page, page 50": "/?page=50",
                 "a recording": f"/recordings/{args.descriptions // 2}", "jobs": "/jobs",
                 "/healthz (opens the database: the floor)": "/healthz"}
        print("| page | p50 ms | p95 ms |")
        print("|---|---:|---:|")
        for name, path in pages.items():
            p50, p95 = percentiles([server.get(path) for _ in range(args.repeat)])
            print(f"| {name} | {p50:.1f} | {p95:.1f} |")
        mix = ["/", "/?q=car", "/api/search?q=driveway", "/?q=giraffe", f"/recordings/{args.descriptions // 3}",
               "/jobs", "/api/recordings/7", "/?q=red+car&page=3"]
        series = [server.rss_mib()]
        for n in range(1, args.requests + 1):
            server.get(mix[n % len(mix)])
            if n % 100 == 0:
                series.append(server.rss_mib())
        print()
        print(f"server RSS MiB every 100 requests (0 … {args.requests}): " + ", ".join(f"{v:.1f}" for v in series))
        print(f"growth over the last {args.requests - 100} requests: {series[-1] - series[1]:+.1f} MiB")
        print("targets: search p95 ≤ 50 ms, pages ≤ 100 ms, memory flat")
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
