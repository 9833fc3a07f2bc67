"""The web page in a real browser: Chromium (the system's, headless) driven by Playwright against a real
``rkvideo serve`` process on a free 127.0.0.1 port, over a database made by the real describe path.

The database: a real H.264 clip described with ``rkvideo describe --db`` by the self-test's tiny ONNX
encoder and GGUF LLM (real thumbnails of the frames they saw), then a second description with moments
committed through the daemon's queue (claim → finish), one of whose captions is a ``<script>``; and a
failed job. Screenshots of the pages are kept in the test's temporary folder (and copied to
``$RKVIDEO_SCREENSHOTS`` when it is set; the README's pictures come from there).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="needs the [web] extra: pip install -e '.[web]'")
playwright = pytest.importorskip("playwright.sync_api", reason="needs Playwright (in the [dev] extra)")

from doubles import web as helpers  # noqa: E402
from rkvideo import store  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
MOMENT = (4.0, 6.0, "A red car drives into the driveway and stops.")
SCRIPT = (7.0, 8.5, "<script>window.pwned = 1</script> A man waits at the door.")


@pytest.fixture(scope="module")
def site(tiny_models, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed: sh scripts/system-packages.sh (apt-get install chromium)")
    work = tmp_path_factory.mktemp("browser")
    clip = helpers.clip(work / "cameras" / "driveway" / "2024-05-01_0800.mp4", seconds=10.0)
    db = work / "rkvideo.db"
    described = subprocess.run([sys.executable, "-m", "rkvideo", "describe", str(clip), "--db", str(db),
                                "--config", str(tiny_models.config), "--frames", "4"],
                               capture_output=True, text=True, timeout=180)
    assert described.returncode == 0, described.stderr
    broken = work / "cameras" / "driveway" / "2024-05-01_0900.mp4"
    broken.write_bytes(b"\x00" * 64)
    with store.open_store(db) as jobs:
        job_id, timeline = helpers.describe(jobs, clip, helpers.result(
            clip, "A red car arrives, parks in the driveway, and a man walks to the door.",
            events=[MOMENT, SCRIPT], stamps=(1.0, 4.5, 5.5, 7.5)))
        jobs.put(str(broken), store.Status.FAILED, size=64, error="the file is damaged, incomplete or not a video")
        failed = jobs.job_at(str(broken)).id
    shots = tmp_path_factory.mktemp("screenshots")
    with helpers.Server("--db", db) as server:
        yield {"url": server.url, "db": db, "job": job_id, "timeline": timeline, "failed": failed, "shots": shots}


@pytest.fixture(scope="module")
def browser(site):
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == []


def keep(site, tab, name: str) -> Path:
    """A screenshot of the page in the test's folder (and in $RKVIDEO_SCREENSHOTS when set)."""
    path = site["shots"] / name
    tab.screenshot(path=str(path), full_page=False)
    if os.environ.get("RKVIDEO_SCREENSHOTS"):
        shutil.copy(path, Path(os.environ["RKVIDEO_SCREENSHOTS"]) / name)
    return path


def test_search_click_a_moment_and_watch_it_from_there_with_captions(site, page):
    page.goto(site["url"] + "?q=driveway")
    moment = page.locator('li.hit[data-kind="moment"] a.hit-link').first
    assert "0:04–0:06" in moment.inner_text()
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert keep(site, page, "search.png").stat().st_size > 0
    moment.click()
    page.wait_for_url(re.compile(rf"/recordings/{site['job']}\?d={site['timeline']}&t=4$"))
    # Playing, and it started at the moment: the first stretch played begins at the moment's start.
    page.wait_for_function("() => { const v = document.getElementById('player');"
                           " return v && !v.paused && v.played.length > 0 && v.currentTime > 4.0; }",
                           timeout=20_000)
    state = page.evaluate("() => { const v = document.getElementById('player');"
                          " return {start: v.played.start(0), now: v.currentTime, width: v.videoWidth}; }")
    assert abs(state["start"] - MOMENT[0]) < 0.2 and state["now"] >= MOMENT[0] and state["width"] == 320
    # The captions track is the chosen description's: loaded, showing, one cue per moment.
    page.wait_for_function("() => document.querySelector('track[default]').readyState === 2")
    cues = page.evaluate("() => { const t = [...document.getElementById('player').textTracks]"
                         ".find(t => t.mode === 'showing'); return [...t.cues].map(c => [c.startTime, c.endTime]); }")
    assert cues == [[MOMENT[0], MOMENT[1]], [SCRIPT[0], SCRIPT[1]]]
    # The <script> caption is text on the page, never code.
    assert page.locator(".events li").nth(1).locator(".event-text").inner_text() == SCRIPT[2]
    assert page.evaluate("() => window.pwned") is None
    assert page.evaluate("() => document.scripts.length") == 1
    page.wait_for_function("() => [...document.querySelectorAll('.frames img')].every(i => i.naturalWidth > 0)")
    keep(site, page, "recording.png")


def test_clicking_a_moment_on_the_recording_page_seeks_there(site, page):
    page.goto(site["url"] + f"recordings/{site['job']}?d={site['timeline']}")
    page.wait_for_function("() => document.getElementById('player').readyState >= 1")
    page.locator(".events a.seek").nth(1).click()
    page.wait_for_function(f"() => document.getElementById('player').currentTime >= {SCRIPT[0]}", timeout=20_000)
    assert page.url.endswith(f"?d={site['timeline']}&t=7")
    assert page.evaluate("() => document.getElementById('player').currentTime") < SCRIPT[1] + 1.5
    # A notification's clip link (notify.clip_path: /recordings/<job>#t=<seconds>) plays from there too.
    page.goto(site["url"] + f"recordings/{site['job']}#t={MOMENT[0]:g}")
    page.wait_for_function("() => { const v = document.getElementById('player');"
                           " return !v.paused && v.played.length > 0; }", timeout=20_000)
    assert abs(page.evaluate("() => document.getElementById('player').played.start(0)") - MOMENT[0]) < 0.2
    # The self-test's description is there too, with the thumbnails of the frames its models saw.
    page.goto(site["url"] + f"recordings/{site['job']}")
    descriptions = page.locator(".all-descriptions li")
    assert descriptions.count() == 2
    descriptions.nth(1).locator("a").click()
    frames = page.locator(".frames img")
    assert frames.count() == 4
    page.wait_for_function("() => [...document.querySelectorAll('.frames img')].every(i => i.naturalWidth === 320)")


def test_retry_turns_a_failed_job_into_a_queued_one(site, page):
    page.goto(site["url"] + "jobs")
    failed = page.locator(f'li[data-job="{site["failed"]}"]')
    assert "damaged" in failed.inner_text()
    keep(site, page, "jobs.png")
    failed.get_by_role("button", name="Retry").click()
    page.wait_for_url(re.compile(r"/jobs\?retried=1$"))
    assert "1 job queued again" in page.locator(".flash").inner_text()
    assert page.locator(f'li[data-job="{site["failed"]}"]').count() == 0
    with store.open_store(site["db"], readonly=True) as jobs:
        job = jobs.job(site["failed"])
    assert job.status == store.Status.QUEUED and job.attempts == 0 and job.error is None
