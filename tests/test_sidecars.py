"""Sidecar files: renderers by name, names, the output folder, WebVTT cues, atomic writes."""
import json
import os
import re
import subprocess
import sys

import pytest

from rkvideo import config, output
from rkvideo.output import sidecars
from rkvideo.output.vtt import sentences, webvtt

FRAMES = [{"index": i, "pts": None, "seconds": s} for i, s in enumerate([1.25, 3.75, 6.25, 8.75])]
TEXT = "A van stops. A man gets out. He carries a box to the door."


def cues(vtt: str) -> list:
    found = re.findall(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n(.+)", vtt)
    return [((int(a) * 3600 + int(b) * 60 + int(c) + int(d) / 1000),
             (int(e) * 3600 + int(f) * 60 + int(g) + int(h) / 1000), text) for a, b, c, d, e, f, g, h, text in found]


def test_vtt_has_one_cue_per_frame_covering_the_clip_in_order():
    vtt = webvtt(FRAMES, 10.0, TEXT)
    assert vtt.startswith("WEBVTT\n\n")
    found = cues(vtt)
    assert len(found) == len(FRAMES)
    assert found[0][0] == 0.0 and found[-1][1] == 10.0
    assert all(a[1] == b[0] for a, b in zip(found, found[1:]))          # no gaps, no overlaps
    assert all(start <= f["seconds"] < end for (start, end, _), f in zip(found, FRAMES))
    # Three sentences over four cues, in order, none lost.
    texts = [t for _, _, t in found]
    assert texts[0] == "A van stops." and texts[-1] == "He carries a box to the door."
    assert [s for s in dict.fromkeys(texts)] == sentences(TEXT)


def test_vtt_escapes_markup_and_handles_long_times():
    vtt = webvtt([{"seconds": 4000.0}], 4000.5, "a <b> & --> c")
    assert "a &lt;b&gt; &amp; --&gt; c" in vtt
    assert "01:06:40.500" in vtt


MOMENTS = [{"start": 4.0, "end": 11.4, "text": "A cat <crosses>\nthe yard.", "frames": [], "score": 2.0},
           {"start": 75.0, "end": 100.2, "text": "A red car parks.", "frames": [], "score": 9.0}]


def test_a_timeline_gets_one_cue_per_moment_and_its_txt_lists_the_moments():
    result = {"text": "Two visits: a cat, then a car.", "frames": FRAMES, "events": MOMENTS}
    vtt = output.renderer("vtt")("/cams/a.mp4", result, 120.0)
    assert cues(vtt) == [(4.0, 11.4, "A cat &lt;crosses&gt; the yard."), (75.0, 100.2, "A red car parks.")]
    txt = output.renderer("txt")("/cams/a.mp4", result, 120.0)
    assert txt == ("Two visits: a cat, then a car.\n\n"
                   "00:04–00:11  A cat <crosses> the yard.\n01:15–01:40  A red car parks.\n")


def test_every_configurable_kind_has_a_renderer_by_its_name():
    assert output.KINDS == config.SIDECARS
    rec = "/cams/a.mp4"
    result = {"text": TEXT, "frames": FRAMES}
    assert output.renderer("txt")(rec, result, 10.0) == TEXT + "\n"
    assert json.loads(output.renderer("json")(rec, result, 10.0)) == {"recording": rec, **result}
    assert output.renderer("vtt")(rec, result, 10.0) == webvtt(FRAMES, 10.0, TEXT)
    with pytest.raises(ValueError, match="known: txt, json, vtt"):
        output.renderer("srt")


def test_targets_beside_the_recording_or_mirrored_under_an_output_folder(tmp_path):
    rec = tmp_path / "cams" / "door" / "2024-05-01.MP4"
    beside = rec.parent / "2024-05-01.MP4"
    assert sidecars.targets(rec, ["vtt", "txt"]) == {"vtt": beside.with_name("2024-05-01.MP4.vtt"),
                                                     "txt": beside.with_name("2024-05-01.MP4.txt")}
    out = sidecars.targets(rec, ["json"], tmp_path / "out", root=tmp_path / "cams")
    assert out == {"json": tmp_path / "out" / "cams" / "door" / "2024-05-01.MP4.json"}


def test_recordings_never_share_a_sidecar(tmp_path):
    """Same stem in one folder, same name in two watched folders: every recording gets its own files."""
    out = tmp_path / "out"
    door, yard = tmp_path / "door", tmp_path / "yard"
    recordings = [(door / "0800.mp4", door), (door / "0800.MOV", door), (yard / "0800.mp4", yard)]
    for folder in (None, out):
        paths = [p for rec, root in recordings for p in sidecars.targets(rec, sidecars.KINDS, folder, root).values()]
        assert len(set(paths)) == len(paths) == 9


def test_write_all_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    rec = tmp_path / "a.mp4"
    result = {"text": TEXT, "frames": FRAMES}
    written = sidecars.write_all(rec, result, 10.0, ["txt", "json", "vtt"])
    assert [p.name for p in written] == ["a.mp4.txt", "a.mp4.json", "a.mp4.vtt"]
    assert (tmp_path / "a.mp4.txt").read_text() == TEXT + "\n"
    assert json.loads((tmp_path / "a.mp4.json").read_text())["recording"] == str(rec)

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sidecars.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        sidecars.write_all(rec, {"text": "new text", "frames": FRAMES}, 10.0, ["txt"])
    assert (tmp_path / "a.mp4.txt").read_text() == TEXT + "\n"         # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4.json", "a.mp4.txt", "a.mp4.vtt"]


def test_the_rename_hook_sees_the_temporary_file_complete_and_the_target_not_yet_written(tmp_path):
    rec = tmp_path / "a.mp4"
    seen = []

    def before_rename(path):
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".a.mp4.txt.")]
        seen.append((path, [t.read_text() for t in temps], path.exists()))

    sidecars.write_all(rec, {"text": TEXT, "frames": FRAMES}, 10.0, ["txt"], before_rename=before_rename)
    assert seen == [(tmp_path / "a.mp4.txt", [TEXT + "\n"], False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4.txt"]


def test_stale_temp_files_of_killed_writers_are_removed_and_nothing_else(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()                                        # its pid now names no process
    names = {
        f".door.mp4.vtt.{ended.pid}.tmp": False,        # a killed writer's: removed
        f".door.mp4.txt.{os.getppid()}.tmp": True,      # a writer that still runs
        f".door.mp4.json.{os.getpid()}.tmp": True,      # this process's own (maybe being written)
        f".notes.doc.txt.{ended.pid}.tmp": True,        # not beside a recording the patterns match
        f".door.mp4.{ended.pid}.tmp": True,             # not a sidecar kind
        f".door.mp4.srt.{ended.pid}.tmp": True,
        "door.mp4.vtt": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    removed = sidecars.remove_stale_temps(tmp_path, os.listdir(tmp_path), lambda name: name.endswith(".mp4"))
    assert removed == [tmp_path / f".door.mp4.vtt.{ended.pid}.tmp"]
    assert sorted(os.listdir(tmp_path)) == sorted(name for name, kept in names.items() if kept)


def test_planted_symlinks_are_never_written_through(tmp_path, monkeypatch):
    """The attack: links at the old predictable temp name, at the final name and at a guessed
    temporary name point at a file the writer can write; that file must stay untouched."""
    victim = tmp_path / "victim.db"
    victim.write_text("precious")
    folder = tmp_path / "cams"
    folder.mkdir()
    rec = folder / "a.mp4"
    (folder / f".a.mp4.txt.{os.getpid()}.tmp").symlink_to(victim)      # the name before this fix
    (folder / "a.mp4.json").symlink_to(victim)                         # the final name
    sidecars.write_all(rec, {"text": TEXT, "frames": FRAMES}, 10.0, ["txt", "json"])
    assert victim.read_text() == "precious"
    assert (folder / "a.mp4.txt").read_text() == TEXT + "\n"
    assert not (folder / "a.mp4.json").is_symlink()                    # replaced by a regular file
    assert json.loads((folder / "a.mp4.json").read_text())["text"] == TEXT

    # Even a link at the exact temporary name (were it guessed) is refused, not followed.
    monkeypatch.setattr(sidecars.secrets, "token_hex", lambda n: "0123456789abcdef")
    (folder / f".a.mp4.vtt.{os.getpid()}.0123456789abcdef.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        sidecars.write_all(rec, {"text": TEXT, "frames": FRAMES}, 10.0, ["vtt"])
    assert victim.read_text() == "precious" and not (folder / "a.mp4.vtt").exists()


def test_a_symlinked_output_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "cams").symlink_to(elsewhere, target_is_directory=True)
    rec = tmp_path / "cams" / "a.mp4"
    with pytest.raises(OSError, match="symbolic link"):
        sidecars.write_all(rec, {"text": TEXT, "frames": FRAMES}, 10.0, ["txt"], out, tmp_path / "cams")
    assert list(elsewhere.iterdir()) == []


def test_temporary_names_stay_within_the_file_systems_name_limit(tmp_path):
    """A recording name whose sidecar names fit (255 bytes) while ``.NAME.<pid>.<random>.tmp`` would
    not: the temporary file gets a short hashed name instead (issue 9)."""
    long_name = "ä" * 120 + ".mp4"                              # 244 bytes; ".json" makes 249
    temps = []

    def before_rename(path):
        temps.extend(p.name for p in tmp_path.iterdir() if p.name.startswith("."))

    written = sidecars.write_all(tmp_path / long_name, {"text": TEXT, "frames": FRAMES}, 10.0, ["txt", "json", "vtt"],
                                 before_rename=before_rename)
    assert [p.name for p in written] == [f"{long_name}.{kind}" for kind in ("txt", "json", "vtt")]
    assert len(temps) == 3 and all(len(os.fsencode(t)) <= 255 and t.startswith(".rkvideo-") for t in temps)
    assert [t.split(".")[2] for t in temps] == ["txt", "json", "vtt"]             # the kind stays readable
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in written)         # nothing left behind
    temps.clear()
    sidecars.write_all(tmp_path / "a.mp4", {"text": TEXT, "frames": FRAMES}, 10.0, ["txt"], before_rename=before_rename)
    assert temps[0].startswith(f".a.mp4.txt.{os.getpid()}.")                      # short names as before


def test_one_sidecar_that_cannot_be_written_does_not_keep_the_others(tmp_path):
    rec = tmp_path / "a.mp4"
    (tmp_path / "a.mp4.json").mkdir()                           # something in the way
    written = sidecars.write_each(rec, {"text": TEXT, "frames": FRAMES}, 10.0, ["json", "txt", "vtt"])
    assert [(s.kind, type(s.error).__name__ if s.error else None) for s in written] == [
        ("json", "IsADirectoryError"), ("txt", None), ("vtt", None)]
    assert json.loads(written[0].text)["text"] == TEXT         # the text it would have written, for a later try
    assert (tmp_path / "a.mp4.txt").read_text() == TEXT + "\n" and (tmp_path / "a.mp4.vtt").is_file()
    (tmp_path / "a.mp4.txt").unlink()
    with pytest.raises(IsADirectoryError):
        sidecars.write_all(rec, {"text": TEXT, "frames": FRAMES}, 10.0, ["json", "txt"])
    assert (tmp_path / "a.mp4.txt").is_file()                   # written although json failed first
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_stale_hashed_temporary_files_are_removed_too(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = f".rkvideo-0123456789abcdef.vtt.{ended.pid}.fedcba9876543210.tmp"
    alive = f".rkvideo-0123456789abcdef.txt.{os.getppid()}.fedcba9876543210.tmp"
    for name in (stale, alive):
        (tmp_path / name).write_text("x")
    removed = sidecars.remove_stale_temps(tmp_path, os.listdir(tmp_path), lambda name: name.endswith(".mp4"))
    assert removed == [tmp_path / stale] and os.listdir(tmp_path) == [alive]
