"""Text files next to each recording, rendered by name: ``txt``, ``json`` and ``vtt``.

Why sidecars at all: NVR web UIs, file managers and video players find a file
called like the recording; they cannot read a database. ``rkvideo watch``
writes them for every recording it describes and ``rkvideo describe
--sidecars`` for one, through the same ``write_all``.

Why renderers by name: a sidecar kind is a name in ``output.sidecars`` (and
``--sidecars``) and one function from a result to the file's text
(``RENDERERS``); adding a kind adds one entry, and no caller lists kinds.

Names keep the recording's whole file name: ``door.mp4`` → ``door.mp4.txt``,
``door.mp4.json``, ``door.mp4.vtt``. Stem names (``door.vtt``, the name every
player looks for first) would be shared by ``door.mp4`` and ``door.MOV`` in one
folder, and one description would overwrite the other; a fallback to full
names only on a clash would make a sidecar's name depend on which files were
there first. One fixed rule is predictable for scripts. The price: a player
that looks only for the stem name does not load ``door.mp4.vtt`` by itself;
one with a fuzzy subtitle search does (mpv ``--sub-auto=fuzzy`` loads subtitles
whose name contains the video's), and any player can open it by hand.

Under ``output.dir`` the files go to ``<dir>/<watched folder's name>/<sub-folders>/``,
always nested by the watched folder's name (also with a single folder, so
adding a second one later moves nothing), because two cameras' folders very
often hold recordings with the same names (``door/0800.mp4``, ``yard/0800.mp4``).

Every file is written to a temporary name in the same folder, flushed to disk
and renamed over the target, so a crash or power cut leaves either the old
file or the new one, never half of one. Temporary names start with a dot and
end in ``.tmp`` so the watcher's patterns never match them. They carry the
writer's pid and 64 random bits (``.door.mp4.vtt.1234.9f86d081884c7d65.tmp``), are created
exclusively and never through a symbolic link (see ``write_atomic``): one left by a writer that was
killed is recognised by that pid no longer running, and the daemon removes it
when it next scans the folder (``remove_stale_temps``). A pid that is in use
again (after a reboot) keeps its stale file until the same sidecar is
written by a process with that pid. A sidecar whose temporary name would be
longer than the file system allows (NAME_MAX, 255 bytes on Linux file
systems; the final name fits) gets a short one made from a hash of its name
(``.rkvideo-<16 hex>.vtt.1234.<16 hex>.tmp``).

Each kind is written on its own (``write_each``): one that fails (a full disk,
a folder in the way, a name too long) does not keep the others from being
written; the caller gets every file's text and error and decides what to keep.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import terminal, vtt

# renderer(recording, result, duration) -> the file's text; ``result`` is ``Result.as_json()``.
Renderer = Callable[[str, dict, float | None], str]


def render_txt(recording: str, result: dict, duration: float | None) -> str:
    """The description; for a timeline, then its moments, one per line (``00:30–00:42  text``)."""
    text = (result.get("text") or "").strip() + "\n"
    if result.get("events"):
        text += "\n" + "\n".join(terminal.moment(e) for e in result["events"]) + "\n"
    return text


def render_json(recording: str, result: dict, duration: float | None) -> str:
    """The whole result, with the recording it belongs to."""
    return json.dumps({"recording": recording, **result}, ensure_ascii=False, indent=2) + "\n"


def render_vtt(recording: str, result: dict, duration: float | None) -> str:
    """WebVTT subtitles: one cue per moment of a timeline, else one per sampled frame (see ``vtt``)."""
    if result.get("events"):
        return vtt.events_webvtt(result["events"])
    return vtt.webvtt(result.get("frames") or [], duration, result.get("text") or "")


RENDERERS: dict[str, Renderer] = {"txt": render_txt, "json": render_json, "vtt": render_vtt}
KINDS = tuple(RENDERERS)
# write_atomic's temporary names: "." + recording name + "." + kind + "." + pid + "." + 16 hex + ".tmp",
# or, when that is too long, ".rkvideo-" + 16 hex of the final name's hash in place of the recording name.
TEMP = re.compile(r"^\.(.+)\.(?:" + "|".join(KINDS) + r")\.(\d{1,10})(?:\.[0-9a-f]{16})?\.tmp$")
HASHED = re.compile(r"^rkvideo-[0-9a-f]{16}$")    # the "recording" part of a hashed name
NAME_MAX = 255          # bytes in one file name, when the file system does not say

# Called with a sidecar's final path once its temporary file is written and synced, before the rename.
BeforeRename = Callable[[Path], None]


def renderer(kind: str) -> Renderer:
    """The renderer named ``kind``; a ValueError lists the known kinds (the config checks names first)."""
    try:
        return RENDERERS[kind]
    except KeyError:
        raise ValueError(f"unknown sidecar kind {kind!r} (known: {', '.join(KINDS)})") from None


def targets(recording: str | os.PathLike, kinds, out_dir: str | os.PathLike | None = None,
            root: str | os.PathLike | None = None) -> dict:
    """Sidecar path per kind: beside the recording, or under ``out_dir``/<root's name> mirroring its
    place below ``root`` (the watched folder it was found in)."""
    recording = Path(recording)
    folder = recording.parent
    if out_dir:
        folder = Path(out_dir)
        if root is not None:
            try:
                folder = folder / Path(root).name / recording.parent.relative_to(root)
            except ValueError:
                pass
    return {kind: folder / f"{recording.name}.{kind}" for kind in kinds}


@dataclass
class Sidecar:
    """One sidecar of a result: where it goes, its text, and why it could not be written (or None)."""
    kind: str
    path: Path
    text: str
    error: OSError | None = None


def write_each(recording: str | os.PathLike, result: dict, duration: float | None, kinds,
               out_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None, *,
               before_rename: BeforeRename | None = None) -> list[Sidecar]:
    """Write the chosen sidecars for one result (``Result.as_json()``), each on its own: a failure is
    kept in that sidecar's ``error`` and the next kind is still written. ``before_rename``: see
    ``write_atomic``."""
    sidecars = []
    for kind, path in targets(recording, kinds, out_dir, root).items():
        sidecar = Sidecar(kind, path, renderer(kind)(str(recording), result, duration))
        try:
            write_atomic(path, sidecar.text, before_rename=before_rename)
        except OSError as exc:
            sidecar.error = exc
        sidecars.append(sidecar)
    return sidecars


def write_all(recording: str | os.PathLike, result: dict, duration: float | None, kinds,
              out_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None, *,
              before_rename: BeforeRename | None = None) -> list:
    """``write_each``, then the first failure raised (the other kinds are written by then); returns
    the paths written."""
    sidecars = write_each(recording, result, duration, kinds, out_dir, root, before_rename=before_rename)
    for sidecar in sidecars:
        if sidecar.error is not None:
            raise sidecar.error
    return [sidecar.path for sidecar in sidecars]


def write_atomic(path: Path, text: str, *, before_rename: BeforeRename | None = None) -> None:
    """Write ``text`` to ``path`` through a fresh temporary file in the same folder and a rename.

    Anyone who may write into a watched folder could plant a symbolic link where the daemon is about
    to write. So the folder is opened once without following a link in its last component, and
    every name is used relative to that descriptor; the temporary name carries 64 random bits
    besides the pid, and it is created exclusively (``O_EXCL`` never opens an existing file or
    link), so it is always a new regular file. The rename replaces a link at the final name
    instead of writing through it.

    ``before_rename(path)`` is called between the two steps, with the temporary file complete: the
    moment a crash leaves a stale temporary file behind (the kill -9 tests stop the process there).
    """
    folder = _open_folder(path.parent)
    try:
        temp = temp_name(path.name, folder)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=folder)
        try:
            with open(fd, "w", encoding="utf-8", closefd=True) as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            if before_rename is not None:
                before_rename(path)
            os.replace(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=folder)
            raise
        os.fsync(folder)        # the rename itself is durable only once the folder is synced
    finally:
        os.close(folder)


def temp_name(name: str, folder: int) -> str:
    """A fresh temporary name for the file ``name`` in the open ``folder``, within the file system's
    limit for one name (a long recording name can fit while its temporary name would not)."""
    unique = f"{os.getpid()}.{secrets.token_hex(8)}.tmp"
    temp = f".{name}.{unique}"
    try:
        limit = os.fpathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = NAME_MAX
    if len(os.fsencode(temp)) <= limit:
        return temp
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f".rkvideo-{digest}.{name.rsplit('.', 1)[-1]}.{unique}"


def _open_folder(folder: Path) -> int:
    """A descriptor of ``folder``, created if missing; refuses a symbolic link in its place."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if os.path.islink(folder):
            raise OSError(e.errno, f"{folder} is a symbolic link; sidecars are never written through one") from e
        raise


def stale_temp(name: str) -> str | None:
    """The recording's file name if ``name`` is a temporary file of ``write_atomic`` whose writer is gone
    (for a short hashed name: ``rkvideo-<hash>``, see ``HASHED``)."""
    match = TEMP.match(name)
    if not match:
        return None
    pid = int(match.group(2))
    if pid == os.getpid():
        return None             # ours: the worker may be writing it right now
    try:
        os.kill(pid, 0)         # signal 0 checks that the process exists, and sends nothing
    except ProcessLookupError:
        return match.group(1)
    except (OSError, OverflowError):
        pass                    # alive under another user, or not a pid at all
    return None


def remove_stale_temps(folder: str | os.PathLike, names, wanted) -> list:
    """Remove the stale temporary files among ``names`` (a listing of ``folder``) whose recording
    name passes ``wanted`` (the daemon's file patterns), and those with a short hashed name (only
    ``write_atomic`` makes those). Returns the paths removed."""
    removed = []
    for name in names:
        if not name.startswith("."):
            continue
        recording = stale_temp(name)
        if recording is not None and (HASHED.match(recording) or wanted(recording)):
            path = Path(folder, name)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
