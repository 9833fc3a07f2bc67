"""Observers of the worker's named points: a seam for tests, never exposed on the command line.

Why a hook and not a patch: the kill -9 tests stop the real daemon process at
exact points (between jobs, inside a sidecar write, inside the commit) and
kill it there. They register an observer here (``tests/doubles/run_daemon.py``)
instead of replacing methods of the daemon or the store, so renaming a private
method cannot break them. With no observer a point costs one empty loop.
"""
from __future__ import annotations

from collections.abc import Callable

Observer = Callable[[str, str], None]       # observer(point, detail): detail is a path, or ""

_observers: list[Observer] = []


def add_observer(observer: Observer) -> Callable[[], None]:
    """Call ``observer(point, detail)`` at every named point of every worker in this process.
    Returns a function that removes it again."""
    _observers.append(observer)
    return lambda: _observers.remove(observer)


def observe(point: str, detail: str = "") -> None:
    """The worker reached ``point``: tell every observer."""
    for observer in list(_observers):
        observer(point, detail)
