"""Another user: read a database as someone who may read it but write neither it nor its folder.

As root: a forked child that becomes ``nobody`` (the interpreter is already loaded, it may be in a
folder that user cannot reach). Otherwise: this user, with the write bits removed meanwhile.
"""
from __future__ import annotations

import gc
import json
import os
import select
import shutil
import signal
import tempfile

import pytest

NOBODY = 65534


@pytest.fixture
def shared_folder():
    """A folder another user can reach (pytest's tmp_path is private to its user)."""
    folder = tempfile.mkdtemp(prefix="rkvideo-shared-")
    os.chmod(folder, 0o755)
    yield folder
    os.chmod(folder, 0o755)
    shutil.rmtree(folder)


def as_reader(folder: str, path: str, read) -> dict:
    """``read()`` (returning JSON-ready data) as a user who may read ``path`` in ``folder`` but write
    neither; an exception in it comes back as ``{"error": ...}``."""
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        os.chmod(folder, 0o555)
        try:
            return read()
        finally:
            os.chmod(folder, 0o755)
            os.chmod(path, 0o644)
    # A child forked from this multi-threaded test process can deadlock on a lock another thread held at
    # the fork: found once as garbage of an earlier test (a PyAV decoder) being finalized in the child,
    # waiting for FFmpeg threads a fork does not copy. So the garbage is collected here first and none
    # in the child; should a child still hang, it is killed after CHILD_DEADLINE and the read is tried
    # once more in a new child.
    answer = _forked(read)
    return answer if answer is not None else _forked(read) or {"error": "the reader child hung twice"}


CHILD_DEADLINE = 60.0


def _forked(read) -> dict | None:
    gc.collect()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # the child: drop to nobody, read, report, exit without running pytest's cleanup
        gc.disable()    # and no finalizer of the parent's objects runs here
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = read()
        except BaseException as exc:   # noqa: BLE001 - reported to the parent
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(answer).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        if not select.select([f], [], [], CHILD_DEADLINE)[0]:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        answer = json.loads(f.read())
    os.waitpid(pid, 0)
    return answer
