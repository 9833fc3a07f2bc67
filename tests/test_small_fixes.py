"""The smaller findings of issue 9, each through the command line it was found with."""
from __future__ import annotations

import json
import re
import subprocess

import pytest

import footage
from doubles import daemon
from doubles.fixtures import cfg  # noqa: F401 - a fixture
from rkvideo import cli, media


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """The real daemon over clips whose names (and so their fake descriptions) are Chinese and English."""
    tmp = tmp_path_factory.mktemp("search")
    folder = tmp / "cameras"
    daemon.clip(folder / "有人在院子里走动.mp4", 1)
    daemon.clip(folder / "一辆红色的汽车停在门口.mp4", 2)
    daemon.clip(folder / "red-car-at-the-gate.mp4", 3)
    db = tmp / "rkvideo.db"
    result = daemon.once(folder, db, daemon.write_config(tmp))
    assert result.returncode == 0, result.stderr
    return folder, db


def test_a_query_without_words_is_one_usage_line_that_does_not_mention_raw(described, capsys):
    _, db = described
    for query in ("", "   ", '"', "+ , ."):
        code, _, err = run(capsys, "search", query, "--db", db)
        assert code == 2, query
        assert err.strip() == f"rkvideo: error: search {query!r}: no word to search for (give at least one word " \
                              f"of letters or digits)"
    code, _, err = run(capsys, "search", '"unbalanced', "--raw", "--db", db)
    assert code == 2 and "--raw" in err                 # here it was used: the hint fits


def test_a_word_inside_chinese_text_is_found(described, capsys):
    folder, db = described
    yard, car = "有人在院子里走动.mp4", "一辆红色的汽车停在门口.mp4"
    for query, name in (("院子", yard), ("院子里", yard), ("汽车", car), ("红色 门口", car)):
        code, out, err = run(capsys, "search", query, "--db", db)
        assert code == 0, (query, err)
        lines = out.splitlines()
        assert len(lines) == 2 and lines[0].startswith(f"{folder / name}  (job "), (query, out)
        assert all(f"[{word}]" in lines[1] for word in query.split()), lines[1]
    code, out, _ = run(capsys, "search", "red car", "--db", db)
    assert code == 0 and out.splitlines()[0].startswith(str(folder / "red-car-at-the-gate.mp4"))
    code, _, _ = run(capsys, "search", "院子 gate", "--db", db)
    assert code == 1                                    # every word must occur: nothing matches


def test_an_empty_prompt_is_a_usage_error(cfg, capsys, tmp_path):
    clip = footage.clip("prompt", seconds=1.0, fps=10)
    code, _, err = run(capsys, "describe", clip, "--prompt", "", "--dry-run")
    assert code == 2
    assert err.strip().startswith("rkvideo: error: --prompt is empty: give the question")
    cfg.write_text('[describe]\nprompt = "  "\n')
    code, _, err = run(capsys, "describe", clip, "--dry-run")
    assert code == 2 and f"{cfg}: describe.prompt must not be empty" in err


def test_images_left_out_by_the_budget_are_named(cfg, capsys):
    images = [footage.image(f"budget{k}.png", size=(64, 48)) for k in range(6)]
    code, out, err = run(capsys, "describe", *images, "--max-new-tokens", "3200", "--dry-run", "--json")
    assert code == 0, err
    [result] = [json.loads(line) for line in out.splitlines()]
    kept = len(result["frames"])
    assert 1 <= kept < 6
    [note] = result["notes"]
    assert note == (f"{6 - kept} of 6 images left out, the 4096-token context holds {kept}: "
                    + ", ".join(str(p) for p in images[kept:]))
    assert f"warning: 6 images: {6 - kept} of 6 images left out" in err


def test_the_damaged_packet_count_never_exceeds_the_packets(tmp_path):
    """Seeks decode a damaged GOP again; each rejected packet counts once."""
    import av
    src = footage.make_clip(tmp_path / "whole.mp4", seconds=6, fps=10, gop=30, faststart=True)
    bad = footage.corrupt(src, tmp_path / "bad.mp4", at=0.5, size=48)
    with av.open(str(bad)) as container:
        stream = container.streams.video[0]
        packets, rejected = 0, 0
        for packet in container.demux(stream):
            packets += 1
            try:
                packet.decode()
            except av.FFmpegError:
                rejected += 1
    assert rejected >= 1
    for mode in media.MODES:
        notes = []
        frames = list(media.sample(bad, 40, mode, notes))
        assert frames
        [note] = [n for n in notes if "damaged packet" in n]
        counted = int(re.match(r"(\d+) damaged", note).group(1))
        assert counted <= packets and counted == rejected, (note, rejected, packets)


def test_selftest_workdir_on_a_file_is_one_usage_line(tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    done = subprocess.run(daemon.command("selftest", "--workdir", existing), capture_output=True, text=True,
                          env=daemon.environment(), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"rkvideo: error: --workdir {existing}: is a file, not a folder (give a folder "
                                   f"to keep the self-test's files in, or a name that does not exist yet)")
    assert existing.read_text() == "keep me" and done.stdout == ""
