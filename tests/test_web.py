"""The web page's routes through Starlette's test client, on real SQLite databases and real clips:
ranking, snippets, filters, pages, Range requests, what is never served, the token, CSRF, escaping,
error pages; and the thumbnails the describe path keeps (files, rows, removal)."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs the [web] extra: pip install -e '.[web]'")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (in the [dev] extra)")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import footage  # noqa: E402
from doubles import daemon, fake_runtime  # noqa: E402
from doubles.postgres import pg_url, postgres  # noqa: E402, F401 - fixtures
from doubles import web as helpers  # noqa: E402
from rkvideo import cli, config as config_mod, llm, pipeline, store, vision  # noqa: E402
from rkvideo.store import thumbnails as thumbnail_files  # noqa: E402
from rkvideo.web import create_app  # noqa: E402

BASE = "http://127.0.0.1:8765"
TOKEN = "a-long-enough-test-token-0123456789"
DAY = 86400


def client(db, token: str = "", **kw) -> TestClient:
    return TestClient(create_app(db, token), base_url=BASE, **kw)


@pytest.fixture(params=["sqlite", "postgres"])
def archive(request, tmp_path):
    """The archive in an SQLite file and in a PostgreSQL database (tests/doubles/postgres.py): the same
    pages from both."""
    return make_archive(tmp_path, tmp_path / "rkvideo.db" if request.param == "sqlite"
                        else request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_archive(tmp_path):
    """The archive in an SQLite file, for tests that reach into the file (its rows, its thumbnails folder)."""
    return make_archive(tmp_path, tmp_path / "rkvideo.db")


def make_archive(tmp_path, db):
    """Two camera folders, a few described recordings (some with moments), a failed and a queued job."""
    jobs = store.open_store(db)
    base = 1_700_000_000.0      # 2023-11-14 (UTC)
    door, yard = tmp_path / "cameras" / "door", tmp_path / "cameras" / "yard"
    made = {}
    made["red"] = helpers.describe(jobs, helpers.clip(door / "a.mp4"), helpers.result(
        door / "a.mp4", "A red car parks. The red car stays. Then the red car leaves.",
        events=[(1.0, 2.5, "A red car drives into the driveway."), (3.0, 4.5, "A man walks to the door.")]),
        mtime=base)
    made["one"] = helpers.describe(jobs, helpers.clip(door / "b.mp4"), helpers.result(
        door / "b.mp4", "A cat sleeps on the porch while a red car passes far away, with many other things "
                        "happening around it all afternoon in the quiet garden."), mtime=base + DAY)
    made["yard"] = helpers.describe(jobs, helpers.clip(yard / "c.mp4"), helpers.result(
        yard / "c.mp4", "A fox crosses the lawn at night.", events=[(2.0, 3.0, "A fox crosses the lawn.")]),
        mtime=base + 2 * DAY)
    broken = yard / "broken.mp4"
    broken.write_bytes(b"not a video")
    jobs.put(str(broken), store.Status.FAILED, size=11, mtime=base + 3 * DAY, error="no video stream (re-encode it)")
    jobs.put(str(yard / "later.mp4"), store.Status.QUEUED, mtime=base + 4 * DAY)
    jobs.close()
    return {"db": db, "jobs": made, "door": door, "yard": yard, "base": base, "broken": broken}


def hits(page: str) -> list:
    """(kind, link) of each result on a search page, in order."""
    return re.findall(r'data-kind="(\w+)">.*?class="hit-link" href="([^"]+)"', page, re.S)


# ------------------------------------------------------------------ search

def test_search_ranks_moments_and_recordings_best_first_with_highlighted_snippets(archive):
    with client(archive["db"]) as web:
        page = web.get("/", params={"q": "red car"})
        assert page.status_code == 200
        found = hits(page.text)
        red_job, red_description = archive["jobs"]["red"]
        one_job, one_description = archive["jobs"]["one"]
        # Every word must appear: the fox (yard) and the moment of the man are not results. The short
        # description saying "red car" three times ranks above the long one saying it once.
        assert sorted(found) == sorted([("recording", f"/recordings/{red_job}?d={red_description}"),
                                        ("recording", f"/recordings/{one_job}?d={one_description}"),
                                        ("moment", f"/recordings/{red_job}?d={red_description}&amp;t=1")])
        recordings = [link for kind, link in found if kind == "recording"]
        assert recordings == [f"/recordings/{red_job}?d={red_description}",
                              f"/recordings/{one_job}?d={one_description}"]
        assert "<mark>red</mark> <mark>car</mark>" in page.text
        assert "0:01–0:02" in page.text                 # the moment's span
        api = web.get("/api/search", params={"q": "red car"}).json()
        moment = next(r for r in api["results"] if r["kind"] == "moment")
        assert moment["start"] == 1.0 and moment["end"] == 2.5 and moment["event_id"] is not None
        assert moment["snippet"] == "A red car drives into the driveway."
        assert moment["matches"] == ["red", "car"]
        # A moment's strip shows the frames inside it; a recording's shows all of them.
        assert [f["seconds"] for f in moment["frames"]] == [1.0]
        whole = next(r for r in api["results"] if r["kind"] == "recording")
        assert [f["seconds"] for f in whole["frames"]] == [1.0, 3.0, 5.0]
        assert [r["score"] for r in api["results"]] == sorted(r["score"] for r in api["results"])
        picture = web.get(whole["frames"][0]["url"])
        # The address notify.thumbnail_path builds by default: /thumbnails/<description>/<frame>.jpg
        assert web.get(f"/thumbnails/{red_description}/0.jpg").content == picture.content
        assert web.get(f"/thumbnails/{red_description}/3.jpg").status_code == 404
        assert picture.status_code == 200 and picture.content[:3] == b"\xff\xd8\xff"


def test_empty_query_lists_recordings_newest_first_with_their_text(archive):
    with client(archive["db"]) as web:
        api = web.get("/api/search").json()
        names = [Path(r["path"]).name for r in api["results"]]
        assert names == ["later.mp4", "broken.mp4", "c.mp4", "b.mp4", "a.mp4"]
        assert api["results"][1]["status"] == "failed"
        assert api["results"][1]["snippet"] == "no video stream (re-encode it)"
        assert api["results"][2]["snippet"] == "A fox crosses the lawn at night."
        page = web.get("/")
        assert "Newest recordings" in page.text and page.text.index("later.mp4") < page.text.index("a.mp4")


def test_filters_by_folder_dates_and_status(archive):
    door, yard, base = str(archive["door"]), str(archive["yard"]), archive["base"]
    day = time.strftime("%Y-%m-%d", time.localtime(base + DAY))
    with client(archive["db"]) as web:
        def names(**params):
            return [Path(r["path"]).name for r in web.get("/api/search", params=params).json()["results"]]

        assert names(folder=door) == ["b.mp4", "a.mp4"]
        assert names(folder=yard, status="failed") == ["broken.mp4"]
        assert names(q="car", folder=yard) == []
        assert names(**{"from": day, "to": day}) == ["b.mp4"]
        assert names(**{"from": day}) == ["later.mp4", "broken.mp4", "c.mp4", "b.mp4"]
        assert sorted(names(q="car", to=day)) == ["a.mp4", "a.mp4", "b.mp4"]      # the description and the moment
        assert names(status="queued") == ["later.mp4"]
        page = web.get("/")
        assert f'<option value="{door}">' in page.text and f'<option value="{yard}">' in page.text
        for bad in ({"from": "yesterday"}, {"status": "lost"}, {"page": "0"}, {"page": "x"}):
            answer = web.get("/", params=bad)
            assert answer.status_code == 400 and "Bad request" in answer.text
        assert web.get("/api/search", params={"page": "-1"}).json()["error"].startswith("page must be")


def test_pagination_walks_every_result_once(tmp_path):
    db = tmp_path / "rkvideo.db"
    with store.open_store(db) as jobs:
        for n in range(45):
            path = tmp_path / "cam" / f"{n:02d}.mp4"
            helpers.describe(jobs, path, helpers.result(path, f"A delivery van stops number {n}.", stamps=(1.0,),
                                                        thumbnails=False), mtime=1_700_000_000.0 + n)
    with client(db) as web:
        seen, url = [], "/api/search?q=delivery+van"
        while url:
            page = web.get(url).json()
            assert len(page["results"]) == (20 if page["page"] < 3 else 5)
            seen += [r["path"] for r in page["results"]]
            url = page["next"]
        assert len(seen) == len(set(seen)) == 45
        html = web.get("/", params={"q": "delivery van", "page": 2}).text
        assert 'rel="prev" href="/?q=delivery+van"' in html and 'rel="next" href="/?q=delivery+van&amp;page=3"' in html
        assert hits(web.get("/", params={"q": "delivery van", "page": 4}).text) == []


# ------------------------------------------------------------------ a recording

def test_recording_page_has_player_track_moments_frames_and_every_description(archive):
    job_id, first = archive["jobs"]["red"]
    with store.open_store(archive["db"]) as jobs:
        _, second = helpers.describe(jobs, archive["door"] / "a.mp4", helpers.result(
            archive["door"] / "a.mp4", "Another model says a car arrives.", model="qwen3-vl-2b", stamps=(2.0, 4.0)))
    with client(archive["db"]) as web:
        page = web.get(f"/recordings/{job_id}", params={"d": first, "t": "1"}).text
        assert f'src="/media/{job_id}#t=1.0"' in page and 'data-start="1.0"' in page
        assert f'src="/recordings/{job_id}/captions/{first}.vtt" default' in page
        assert f'src="/recordings/{job_id}/captions/{second}.vtt">' in page
        link = f'class="seek" href="/recordings/{job_id}?d={first}&amp;t=3" data-start="3.0">0:03–0:04</a>'
        assert link in page
        assert page.count('<img src="/thumbnails/') == 3 and "0:05 <small>(5.00 s)</small>" in page
        assert "42 prompt, 12 vision, 13 new" in page and "encode 0.50 s, generate 1.25 s" in page
        assert "Every description (2)" in page and "Another model says a car arrives." in page
        newest = web.get(f"/recordings/{job_id}").text      # no ?d=: the newest description is shown
        assert f'captions/{second}.vtt" default' in newest
        data = web.get(f"/api/recordings/{job_id}").json()
        assert [d["id"] for d in data["descriptions"]] == [second, first]
        assert [e["text"] for e in data["descriptions"][1]["events"]] == ["A red car drives into the driveway.",
                                                                          "A man walks to the door."]
        assert data["media_url"] == f"/media/{job_id}" and data["available"] is True


def test_captions_come_from_the_database_one_cue_per_moment_or_per_frame(archive):
    red_job, red = archive["jobs"]["red"]
    plain_job, plain = archive["jobs"]["one"]
    with client(archive["db"]) as web:
        moments = web.get(f"/recordings/{red_job}/captions/{red}.vtt")
        assert moments.headers["content-type"].startswith("text/vtt")
        assert moments.text.startswith("WEBVTT\n") and moments.text.count(" --> ") == 2
        assert "00:00:01.000 --> 00:00:02.500\nA red car drives into the driveway." in moments.text
        frames = web.get(f"/recordings/{plain_job}/captions/{plain}.vtt").text
        assert frames.count(" --> ") == 3 and "00:00:00.000 --> 00:00:02.000" in frames
        assert web.get(f"/recordings/{plain_job}/captions/{red}.vtt").status_code == 404     # not its description


# ------------------------------------------------------------------ streaming and what is never served

def test_video_is_streamed_with_range_requests(archive):
    job_id, _ = archive["jobs"]["red"]
    data = (archive["door"] / "a.mp4").read_bytes()
    with client(archive["db"]) as web:
        whole = web.get(f"/media/{job_id}")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
        part = web.get(f"/media/{job_id}", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == data[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
        tail = web.get(f"/media/{job_id}", headers={"Range": "bytes=-500"})
        assert tail.status_code == 206 and tail.content == data[-500:]
        past = web.get(f"/media/{job_id}", headers={"Range": f"bytes={len(data) + 10}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
        head = web.head(f"/media/{job_id}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and not head.content


def test_only_what_the_database_knows_is_served(sqlite_archive, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    job_id, description = sqlite_archive["jobs"]["red"]
    with client(sqlite_archive["db"]) as web:
        for url in ("/media/999", "/recordings/999", "/thumbnails/999.jpg", f"/recordings/{job_id}?d=999",
                    f"/recordings/{job_id}/captions/999.vtt", "/media/99999999999999999999999",
                    f"/media/{secret}", "/media/..%2F..%2Fsecret.txt", "/static/../routes.py",
                    "/static/..%2Froutes.py", "/thumbnails/..%2F..%2Fsecret.txt", f"/thumbnails/{secret}",
                    "/api/recordings/999"):
            answer = web.get(url)
            assert answer.status_code == 404, url
            assert "private" not in answer.text and "Traceback" not in answer.text
        assert web.get("/api/recordings/999").json() == {"error": "There is no recording 999."}
        # A row edited to point outside the thumbnails folder is not followed.
        conn = sqlite3.connect(sqlite_archive["db"])
        with conn:
            conn.execute("UPDATE thumbnails SET path = ? WHERE id = 1", ["../../secret.txt"])
        conn.close()
        assert web.get("/thumbnails/1.jpg").status_code == 404
        # A recording whose file is gone: the page says so, the media 404s.
        (sqlite_archive["door"] / "a.mp4").unlink()
        assert "is no longer at" in web.get(f"/recordings/{job_id}").text
        assert web.get(f"/media/{job_id}").status_code == 404


# ------------------------------------------------------------------ escaping, errors

def test_text_and_file_names_are_escaped_everywhere(tmp_path):
    db = tmp_path / "rkvideo.db"
    evil = tmp_path / "cam<script>" / "<script>alert(1)</script>.mp4"
    with store.open_store(db) as jobs:
        helpers.describe(jobs, helpers.clip(evil), helpers.result(
            evil, "A <script>alert(2)</script> caption with <b>tags</b> & \"quotes\".",
            events=[(0.5, 1.5, "<script>alert(3)</script> moment <img src=x onerror=alert(4)>")]))
        jobs.put(str(tmp_path / "<script>alert(5)</script>.mp4"), store.Status.FAILED,
                 error="<script>alert(6)</script>")
    with client(db) as web:
        for url in ("/", "/?q=script", "/?q=alert", "/recordings/1", "/jobs"):
            page = web.get(url).text
            assert page.count("<script") == 1, url      # ours: <script src="/static/app.js">
            assert "<img src=x" not in page and "<b>tags" not in page
            assert "&lt;script&gt;alert(" in page, url
        track = web.get("/recordings/1/captions/1.vtt").text
        assert "&lt;script&gt;alert(3)&lt;/script&gt; moment &lt;img src=x onerror=alert(4)&gt;" in track
        headers = web.get("/").headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


def test_errors_are_pages_not_tracebacks(sqlite_archive):
    with client(sqlite_archive["db"], raise_server_exceptions=False) as web:
        missing = web.get("/no/such/page")
        assert missing.status_code == 404 and "Not found" in missing.text and "<html" in missing.text
        assert web.post("/").status_code == 405
        # A row that cannot be read (broken JSON written by another tool): a 500 page, the traceback in the log.
        conn = sqlite3.connect(sqlite_archive["db"])
        with conn:
            conn.execute("UPDATE descriptions SET frames = '{broken' WHERE id = 1")
        conn.close()
        crash = web.get("/recordings/1")
        assert crash.status_code == 500 and "Something went wrong" in crash.text and "Traceback" not in crash.text
        assert web.get("/api/recordings/1").json()["error"].startswith("The server could not answer")
        # The database is gone: 503 pages, and /healthz says so.
        for name in os.listdir(sqlite_archive["db"].parent):
            if name.startswith("rkvideo.db"):
                path = sqlite_archive["db"].parent / name
                path.unlink() if path.is_file() else None
        gone = web.get("/")
        assert gone.status_code == 503 and "Database unavailable" in gone.text
        assert web.get("/healthz").status_code == 503


def test_the_server_needs_an_existing_database(tmp_path):
    with pytest.raises(store.StoreError, match="no database yet"):
        create_app(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


# ------------------------------------------------------------------ jobs, CSRF, token, hosts

def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_jobs_page_counts_running_failed_and_retry_needs_the_csrf_token(archive):
    with store.open_store(archive["db"]) as jobs:
        running = jobs.claim("board-1")          # later.mp4, the only queued job
        failed = jobs.job_at(str(archive["broken"]))
    with client(archive["db"]) as web:
        page = web.get("/jobs").text
        counts = re.findall(r'<td class="status (\w+)">(\d+)</td>', page)
        assert dict(counts) == {"queued": "0", "running": "1", "done": "3", "failed": "1", "skipped": "0"}
        assert "later.mp4" in page and "on board-1" in page
        assert "no video stream (re-encode it)" in page and f'action="/jobs/{failed.id}/retry"' in page
        assert web.get("/api/jobs").json()["running"][0]["id"] == running.id
        # No token, a wrong one, another site: refused, and nothing changes.
        assert web.post(f"/jobs/{failed.id}/retry", data={}).status_code == 403
        assert web.post(f"/jobs/{failed.id}/retry", data={"csrf": "x" * 43}).status_code == 403
        token = csrf_of(page)
        other = web.post(f"/jobs/{failed.id}/retry", data={"csrf": token}, headers={"Origin": "http://evil.example"})
        assert other.status_code == 403 and "another site" in other.text
        with store.open_store(archive["db"], readonly=True) as jobs:
            assert jobs.job(failed.id).status == store.Status.FAILED
        done = web.post(f"/jobs/{failed.id}/retry", data={"csrf": token}, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "/jobs?retried=1"
        assert "1 job queued again" in web.get("/jobs?retried=1").text
        with store.open_store(archive["db"], readonly=True) as jobs:
            assert jobs.job(failed.id).status == store.Status.QUEUED and jobs.job(failed.id).attempts == 0
        assert web.post("/jobs/999/retry", data={"csrf": token}).status_code == 404


def test_a_token_protects_pages_api_and_forms(archive):
    with client(archive["db"], TOKEN) as web:
        first = web.get("/?q=car", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/login?next=%2F%3Fq%3Dcar"
        assert web.get("/api/search").status_code == 401
        for url in ("/media/1", "/thumbnails/1.jpg", "/recordings/1/captions/1.vtt", "/jobs"):
            assert web.get(url, follow_redirects=False).status_code == 303, url
        assert web.get("/healthz").status_code == 200 and web.get("/static/app.js").status_code == 200
        form = web.get("/login?next=/jobs")
        wrong = web.post("/login?next=/jobs", data={"csrf": csrf_of(form.text), "token": "guess"})
        assert wrong.status_code == 401 and "That is not the token" in wrong.text
        assert web.get("/jobs", follow_redirects=False).status_code == 303
        right = web.post("/login?next=/jobs", data={"csrf": csrf_of(form.text), "token": TOKEN},
                         follow_redirects=False)
        assert right.status_code == 303 and right.headers["location"] == "/jobs"
        assert "httponly" in right.headers["set-cookie"].lower() and TOKEN not in right.headers["set-cookie"]
        assert web.get("/jobs").status_code == 200 and web.get("/media/1").status_code == 200
        web.post("/logout", data={"csrf": csrf_of(web.get("/jobs").text)})
        assert web.get("/jobs", follow_redirects=False).status_code == 303
    with client(archive["db"], TOKEN) as api:
        assert api.get("/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert api.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        # Only paths on this server after logging in.
        login = api.get("/login")
        away = api.post("/login?next=//evil.example/", data={"csrf": csrf_of(login.text), "token": TOKEN},
                        follow_redirects=False)
        assert away.headers["location"] == "/"


def test_without_a_token_only_loopback_host_names_are_answered(archive):
    with client(archive["db"]) as web:
        assert web.get("/", headers={"Host": "localhost:8765"}).status_code == 200
        assert web.get("/", headers={"Host": "[::1]:8765"}).status_code == 200
        rebound = web.get("/api/jobs", headers={"Host": "attacker.example:8765"})
        assert rebound.status_code == 421
    with client(archive["db"], TOKEN) as web:
        assert web.get("/healthz", headers={"Host": "nas.lan:8765"}).status_code == 200


# ------------------------------------------------------------------ the command

def test_serve_refuses_other_hosts_without_a_token_short_tokens_and_missing_databases(tmp_path, capsys):
    db = tmp_path / "rkvideo.db"
    store.open_store(db).close()
    assert cli.main(["serve", "--db", str(db), "--host", "0.0.0.0"]) == cli.EXIT_USAGE
    assert "set serve.token" in capsys.readouterr().err
    config = tmp_path / "config.toml"
    config.write_text('[serve]\ntoken = "short"\n')
    assert cli.main(["serve", "--db", str(db), "--config", str(config)]) == cli.EXIT_USAGE
    assert "serve.token in" in capsys.readouterr().err
    assert cli.main(["serve", "--db", str(tmp_path / "none.db")]) == cli.EXIT_RUNTIME
    assert "no database yet" in capsys.readouterr().err
    assert cli.main(["serve", "--db", str(db), "--port", "70000"]) == cli.EXIT_USAGE
    config.write_text('[serve]\nport = 70000\n')
    assert cli.main(["serve", "--db", str(db), "--config", str(config)]) == cli.EXIT_USAGE
    assert "serve.port must be a port number" in capsys.readouterr().err


def test_serve_runs_as_a_process_and_a_busy_port_is_one_line(archive):
    with helpers.Server("--db", archive["db"]) as server:
        with urllib.request.urlopen(server.url + "healthz", timeout=10) as answer:
            assert json.load(answer) == {"status": "ok"}
        port = server.url.rsplit(":", 1)[1].strip("/")
        busy = cli.main(["serve", "--db", str(archive["db"]), "--port", port])
        assert busy == cli.EXIT_RUNTIME
    status, output = server.stop()
    assert status in (0, -15), output
    assert "Traceback" not in output


def test_service_unit_runs_serve_beside_the_daemon_with_the_same_hardening(tmp_path):
    root = Path(__file__).resolve().parents[1]

    def settings(name):
        text = (root / "systemd" / name).read_text()
        pairs = [line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")]
        return {k: [v for key, v in pairs if key == k] for k, _ in pairs}

    web, daemon = settings("rkvideo-web.service"), settings("rkvideo.service")
    assert " serve " in web["ExecStart"][0] and "--db /var/lib/rkvideo/rkvideo.db" in web["ExecStart"][0]
    assert web["User"] == daemon["User"] and web["After"][0].endswith("rkvideo.service")
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces",
                "RestrictSUIDSGID", "LockPersonality", "CapabilityBoundingSet", "UMask", "SystemCallArchitectures"):
        assert web[key] == daemon[key], key
    assert web["IPAddressDeny"] == ["any"] and web["IPAddressAllow"] == ["localhost"]
    assert web["PrivateDevices"] == ["yes"] and web["RestartPreventExitStatus"] == [str(cli.EXIT_USAGE)]
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / "rkvideo-web.service"
    copy.write_text((root / "systemd" / "rkvideo-web.service").read_text().replace("/opt/rkvideo/bin/rkvideo",
                                                                                   sys.executable))
    check = subprocess.run([tool, "verify", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# ------------------------------------------------------------------ thumbnails

def test_thumbnails_are_files_beside_the_database_and_go_with_their_description(sqlite_archive, capsys):
    db = sqlite_archive["db"]
    folder = thumbnail_files.folder_for(db)
    assert folder == db.parent / "rkvideo.db.thumbnails"
    job_id, description = sqlite_archive["jobs"]["red"]
    rows = helpers_rows(db, "SELECT seq, seconds, path FROM thumbnails WHERE description_id = ? ORDER BY seq",
                        [description])
    assert [(r[0], r[1]) for r in rows] == [(0, 1.0), (1, 3.0), (2, 5.0)]
    assert [r[2] for r in rows] == [f"0000/{description}-{n}.jpg" for n in range(3)]
    files = [folder / r[2] for r in rows]
    assert all(f.read_bytes()[:3] == b"\xff\xd8\xff" for f in files)
    assert cli.main(["forget", str(description), "--db", str(db)]) == cli.EXIT_OK
    assert "1 description removed" in capsys.readouterr().err
    assert not any(f.exists() for f in files)
    assert helpers_rows(db, "SELECT count(*) FROM thumbnails WHERE description_id = ?", [description]) == [(0,)]
    assert helpers_rows(db, "SELECT count(*) FROM events WHERE description_id = ?", [description]) == [(0,)]
    with store.open_store(db, readonly=True) as jobs:
        job = jobs.job(job_id)
        assert job.status == store.Status.DONE and "rkvideo forget" in job.error
    assert cli.main(["forget", str(description), "--db", str(db)]) == cli.EXIT_USAGE
    assert f"no description {description}" in capsys.readouterr().err


def helpers_rows(db, sql, params=()):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_link_planted_in_the_thumbnails_folder_costs_the_thumbnails_not_the_description(tmp_path, caplog):
    db = tmp_path / "rkvideo.db"
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = thumbnail_files.folder_for(db)
    folder.mkdir()
    (folder / "0000").symlink_to(outside)         # where description 1's files would go
    with store.open_store(db) as jobs:
        _, description = helpers.describe(jobs, tmp_path / "a.mp4", helpers.result(tmp_path / "a.mp4", "A dog."))
        assert jobs.descriptions(jobs.job_at(str(tmp_path / "a.mp4")).id)[0]["text"] == "A dog."
    assert list(outside.iterdir()) == []
    assert helpers_rows(db, "SELECT count(*) FROM thumbnails") == [(0,)]
    assert "thumbnails of description 1 not kept" in caplog.text


def test_the_daemon_keeps_thumbnails_unless_told_not_to(tmp_path):
    for keep in (True, False):
        work = tmp_path / str(keep)
        folder = work / "cam"
        daemon.clips(folder, 2)
        config = daemon.write_config(work, sidecars=())
        if not keep:
            config.write_text(config.read_text().replace("[output]", "[output]\nthumbnails = false"))
        db = work / "rkvideo.db"
        done = daemon.once(folder, db, config)
        assert done.returncode == 0, done.stderr
        rows = daemon.query(db, "SELECT t.path, d.frame_count FROM thumbnails t JOIN descriptions d "
                                "ON d.id = t.description_id")
        if keep:
            assert len(rows) == sum(r["frame_count"] for r in daemon.query(db, "SELECT frame_count FROM descriptions"))
            for row in rows:
                data = (thumbnail_files.folder_for(db) / row["path"]).read_bytes()
                assert data[:3] == b"\xff\xd8\xff"
        else:
            assert rows == [] and not thumbnail_files.folder_for(db).exists()


# ------------------------------------------------------------------ the search queries themselves

@pytest.fixture
def many(tmp_path):
    """60 recordings in three folders over 60 days, with words spread so that filters and words cross."""
    db = tmp_path / "rkvideo.db"
    words = ["red car", "blue van", "red van", "a cat"]
    with store.open_store(db) as jobs:
        for n in range(60):
            path = tmp_path / ("door", "yard", "gate")[n % 3] / f"{n:02d}.mp4"
            text = f"Number {n}: {words[n % 4]} in the morning."
            moments = [(1.0, 2.0, f"{words[(n + 1) % 4]} passes by."), (3.0, 4.0, "nothing moves")]
            helpers.describe(jobs, path, helpers.result(path, text, events=moments, stamps=(1.0,), thumbnails=False),
                             mtime=1_700_000_000.0 + n * DAY)
        jobs.fail(jobs.job_at(str(tmp_path / "door" / "00.mp4")).id, "it broke")
    return db


def expected(db, words: list, folder=None, since=None, until=None, status=None) -> set:
    """Every (kind, id) whose text has all the words and whose job passes the filters, by brute force."""
    rows = helpers_rows(db, "SELECT 'event', e.id, e.text, j.path, j.mtime, j.status FROM events e JOIN jobs j "
                            "ON j.id = e.job_id UNION ALL SELECT 'description', d.id, d.text, j.path, j.mtime, "
                            "j.status FROM descriptions d JOIN jobs j ON j.id = d.job_id")
    found = set()
    for kind, ident, text, path, mtime, job_status in rows:
        tokens = re.findall(r"\w+", text.lower())
        if not all(w in tokens for w in words):
            continue
        if folder is not None and str(Path(path).parent) != folder:
            continue
        if (since is not None and mtime < since) or (until is not None and mtime >= until) or \
                (status is not None and job_status != status):
            continue
        found.add((kind, ident))
    return found


@pytest.mark.parametrize("how", ["set", "join"])
def test_filtered_search_finds_exactly_the_matches_whichever_way_it_filters(many, tmp_path, monkeypatch, how):
    from rkvideo.store import browse
    # Force one way: "set" for every filter, or "join" for every filter (FEW = 0: never "few matches").
    monkeypatch.setattr(browse, "FEW", 0)
    monkeypatch.setattr(browse, "SELECTIVE", 1.0 if how == "set" else 0.0)
    base = 1_700_000_000.0
    cases = [({"folder": str(tmp_path / "door")}, ["red"]),
             ({"folder": str(tmp_path / "yard"), "status": "done"}, ["van"]),
             ({"since": base + 10 * DAY, "until": base + 20 * DAY}, ["red", "car"]),
             ({"status": "failed"}, ["car"]),
             ({"folder": str(tmp_path / "gate"), "since": base + 30 * DAY}, ["cat"])]
    with store.open_store(many, readonly=True) as jobs:
        for filters, words in cases:
            found = jobs.browse(" ".join(words), store.Filters(**{k: (store.Status(v) if k == "status" else v)
                                                                  for k, v in filters.items()}), 500)
            got = {(h["kind"], h["event_id"] or h["description_id"]) for h in found}
            assert got == expected(many, words, **filters)
            assert found and all(h["snippet"] for h in found)


def test_a_common_word_is_ranked_over_its_newest_matches(many, monkeypatch):
    from rkvideo.store import browse
    monkeypatch.setattr(browse, "RANK_WINDOW", 5)
    with store.open_store(many, readonly=True) as jobs:
        found = jobs.browse("red", store.Filters(), 500)
    newest = sorted(expected(many, ["red"]), key=lambda hit: -hit[1])
    events = [i for k, i in newest if k == "event"][:5]
    descriptions = [i for k, i in newest if k == "description"][:5]
    assert sorted(h["event_id"] for h in found if h["kind"] == "event") == sorted(events)
    assert sorted(h["description_id"] for h in found if h["kind"] == "description") == sorted(descriptions)


def test_only_the_words_of_a_query_count_so_no_query_is_an_error(archive):
    with client(archive["db"]) as web:
        plain = {r["description_id"] for r in web.get("/api/search", params={"q": "red car"}).json()["results"]}
        for query in ('"red car"', "red, car!", "RED car\x00", "(red) car*"):
            answer = web.get("/api/search", params={"q": query})
            assert answer.status_code == 200, query
            assert {r["description_id"] for r in answer.json()["results"]} == plain, query
        for query in ('"', "-", "*", "NEAR(", "'"):
            answer = web.get("/", params={"q": query})
            assert answer.status_code == 200 and "Nothing matches" in answer.text, query


def test_the_player_starts_where_asked_even_at_zero_and_a_photo_set_shows_its_picture(archive, tmp_path):
    job_id, _ = archive["jobs"]["yard"]
    photo = tmp_path / "shots" / "front.jpg"
    photo.parent.mkdir()
    photo.write_bytes(helpers.result(photo, "x").thumbnails[0])
    photos = tmp_path / "photos.db"
    with store.open_store(photos) as jobs:
        outcome = helpers.result(photo, "A parcel on the step.", stamps=(0.0,))
        outcome.kind = pipeline.Kind.IMAGES
        photo_job, _ = helpers.describe(jobs, photo, outcome)
    with client(archive["db"]) as web:
        at_zero = web.get(f"/recordings/{job_id}", params={"t": "0"}).text
        assert f'src="/media/{job_id}#t=0.0"' in at_zero and 'data-start="0.0"' in at_zero
        plain = web.get(f"/recordings/{job_id}").text
        assert f'src="/media/{job_id}"' in plain and 'data-start=""' in plain
    with client(photos) as web:
        page = web.get(f"/recordings/{photo_job}").text
        assert f'<img class="picture" src="/media/{photo_job}"' in page and "<video" not in page
        assert web.get(f"/media/{photo_job}").headers["content-type"] == "image/jpeg"


def test_the_pipeline_returns_a_small_jpeg_of_each_frame_it_encoded_only_when_asked(tmp_path):
    pairing = fake_runtime.Pairing()
    recording = helpers.clip(tmp_path / "wide.mp4", seconds=2.0)
    big = footage.make_clip(tmp_path / "big.mp4", seconds=2.0, fps=10, size=(640, 360))
    with llm.register(fake_runtime.LLM_SUFFIX, pairing.open_llm), \
            vision.register(fake_runtime.VISION_SUFFIX, pairing.open_vision):
        cfg = config_mod.read(daemon.write_config(tmp_path))
        with pipeline.Describer(cfg) as describer:
            kept = describer.describe_video(big, frames=3, thumbnails=True)
            small = describer.describe_video(recording, frames=2, thumbnails=True)
            none = describer.describe_video(big, frames=3)
    assert len(kept.thumbnails) == len(kept.frames) == 3 and none.thumbnails == []
    shapes = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).shape for j in kept.thumbnails]
    assert shapes == [(180, 320, 3)] * 3              # 640×360 frames, 320 px wide, aspect kept
    assert cv2.imdecode(np.frombuffer(small.thumbnails[0], np.uint8), cv2.IMREAD_COLOR).shape == (180, 320, 3)
    assert "thumbnails" not in kept.as_json()
