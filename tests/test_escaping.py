"""Control characters in file names never forge log lines or reach the terminal raw (issue 9, item 7).

A file name may hold a newline (a fake log line after it), ESC/OSC sequences (they retitle or
drive the terminal), other C0/C1 controls, or bytes that are not UTF-8. Wherever rkvideo shows a
path — the daemon's log, `list`, `show`, `search`, `describe`, error lines — they appear escaped.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest

import footage
from doubles import daemon
from rkvideo import printable

HOSTILE = "a\nFAKE LOG LINE\x1b]0;x\x07.mp4"
SHOWN = "a\\nFAKE LOG LINE\\x1b]0;x\\x07.mp4"
# Raw controls a terminal would act on: C0 but newline (and tab), DEL, C1.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def raw_controls(text: str) -> list:
    return RAW.findall(text)


# ------------------------------------------------------------------ the helper

@pytest.mark.parametrize("text, shown", [
    (HOSTILE, SHOWN),
    ("tab\there\rcr", "tab\\there\\rcr"),
    ("nul\x00del\x7fcsi\x9b", "nul\\x00del\\x7fcsi\\x9b"),
    ("line\u2028sep\u202eltr", "line\\u2028sep\\u202eltr"),
    (os.fsdecode(b"caf\xe9.mp4"), "caf\\xe9.mp4"),          # a byte that is not UTF-8
    ("Einfahrt Tür 東門 1.mp4", "Einfahrt Tür 東門 1.mp4"),    # printable text is left alone
])
def test_line_escapes_every_control_and_undecodable_byte(text, shown):
    assert printable.line(text) == shown
    printable.line(text).encode("utf-8")                       # always encodable


def test_block_keeps_line_breaks_and_tabs_only():
    assert printable.block("one\ntwo\tthree\x1b[2J") == "one\ntwo\tthree\\x1b[2J"


def test_json_text_is_valid_utf8_json_with_the_same_data_and_no_raw_c1():
    data = {"path": "x\x85y\u2028z\x1b", "bad": os.fsdecode(b"caf\xe9")}
    text = printable.json_text(data)
    text.encode("utf-8")
    assert not raw_controls(text) and "\u2028" not in text
    back = json.loads(text)
    assert back["path"] == data["path"]
    assert back["bad"] == "caf\\xe9"                            # as the database stores such a name


def test_log_formatter_keeps_one_record_on_one_line_and_indents_tracebacks():
    formatter = printable.LogFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("rkvideo", logging.INFO, __file__, 1, "queued %s [job %d]", (HOSTILE, 3), None)
    assert formatter.format(record) == f"INFO queued {SHOWN} [job 3]"
    try:
        raise OSError(f"cannot open {HOSTILE}")
    except OSError:
        record = logging.LogRecord("rkvideo", logging.ERROR, __file__, 1, "%s: failed", (HOSTILE,), sys.exc_info())
    lines = formatter.format(record).split("\n")
    assert lines[0] == f"ERROR {SHOWN}: failed"
    assert all(line.startswith(" ") for line in lines[1:])      # nothing below can pass for a record
    assert not any(raw_controls(line) for line in lines)


# ------------------------------------------------------------------ through the daemon and the CLI

@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """The real daemon (`watch --once`) over a folder holding a hostile file name, and its database."""
    tmp = tmp_path_factory.mktemp("hostile")
    folder = tmp / "cameras"
    daemon.clip(folder / HOSTILE, 1)
    daemon.clip(folder / "plain.mp4", 2)
    config = daemon.write_config(tmp)
    db = tmp / "rkvideo.db"
    result = daemon.once(folder, db, config, "--verbose")
    assert result.returncode == 0, result.stderr
    assert daemon.jobs(db)[str(folder / HOSTILE)]["status"] == "done"
    return folder, db, result.stderr


def test_the_daemon_log_shows_the_name_escaped_on_one_line(described):
    folder, _, log = described
    assert not raw_controls(log), log
    lines = log.splitlines()
    assert not any(line.startswith("FAKE LOG LINE") for line in lines)
    assert any(f"queued {folder}/{SHOWN} [job" in line for line in lines), log
    assert any(re.search(r"\bINFO done ", line) and SHOWN in line for line in lines), log


def run(*argv, env=None):
    """The command line in a real process, its stdout and stderr as bytes decoded strictly."""
    proc = subprocess.run([sys.executable, "-m", "rkvideo", *argv], capture_output=True, timeout=60,
                          env=env or daemon.environment(PYTHONIOENCODING="utf-8:strict"))
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def test_list_show_and_search_print_the_name_escaped(described):
    folder, db, _ = described
    hostile = str(folder / HOSTILE)
    code, out, err = run("list", "--db", str(db))
    assert code == 0, err
    assert not raw_controls(out) and f"{folder}/{SHOWN}" in out
    assert len(out.splitlines()) == 3                           # heading + two jobs: no forged row
    code, out, err = run("show", hostile, "--db", str(db))
    assert code == 0, err
    assert not raw_controls(out) and out.splitlines()[0] == f"{folder}/{SHOWN}"
    code, out, err = run("search", "FAKE", "--db", str(db))
    assert code == 0, err
    assert not raw_controls(out) and out.splitlines()[0].startswith(f"{folder}/{SHOWN}  (job ")
    assert len(out.splitlines()) == 2
    code, out, err = run("list", "--json", "--db", str(db))
    assert code == 0 and not raw_controls(out)
    assert hostile in [job["path"] for job in json.loads(out)]


def test_error_lines_and_describe_output_show_names_escaped(tmp_path):
    clip = tmp_path / HOSTILE
    shutil.copyfile(footage.clip("esc", seconds=1.0, fps=10, size=(64, 48)), clip)
    undecodable = os.path.join(os.fsencode(tmp_path), b"caf\xe9.mp4")
    shutil.copyfile(clip, undecodable)
    config = tmp_path / "config.toml"
    config.write_text("")
    code, out, err = run("describe", str(clip), os.fsdecode(undecodable), "--dry-run", "--config", str(config))
    assert code == 0, err
    assert not raw_controls(out) and f"{tmp_path}/{SHOWN}: video" in out and "caf\\xe9.mp4: video" in out
    code, out, err = run("describe", str(clip), os.fsdecode(undecodable), "--dry-run", "--json",
                         "--config", str(config))
    assert code == 0, err
    assert [json.loads(line)["inputs"] for line in out.splitlines()] == [[str(clip)], [f"{tmp_path}/caf\\xe9.mp4"]]
    missing = tmp_path / ("gone\x1b[2J" + HOSTILE)
    code, out, err = run("describe", str(missing), "--dry-run", "--config", str(config))
    assert code == 2
    assert not raw_controls(err) and len(err.splitlines()) == 1
    assert "gone\\x1b[2J" + SHOWN in err
