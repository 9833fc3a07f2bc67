"""``rkvideo watch``: describe every recording dropped into a folder, exactly once.

The daemon in parts, each with one job (the why of each is in its docstring):

* ``service``: start-up, the main loop, signals and stopping; ``run`` returns an
  ``Outcome`` (stopped, runtime failure, configuration error) that the command
  line turns into an exit status. ``watch`` opens and locks the store for one
  daemon and runs a ``Service`` on it; a ``Service`` itself receives its store.
* ``watcher``: file-system events, the start-up scan, settling, the periodic
  rescan, and removing the temporary files of interrupted sidecar writes.
* ``intake``: one settled, moved or deleted file → its job (queue, skip a
  duplicate, fail a bad file, follow a rename found by content).
* ``worker``: claim → describe → sidecars → finish, and the whole retry policy.
* ``sidecars``: a description's sidecars written each on its own; those that
  could not be written are kept in the store and written later (``rewrite``,
  also for ``rkvideo retry --sidecars``).
* ``follow``: the inotify watches, made again when a watched folder is
  replaced (deleted and made again, remounted).
* ``own``: the daemon's own files (database, lock file, sidecars, output
  folder), never taken for recordings.
* ``notify``: systemd's READY/STATUS/STOPPING messages and the watchdog.
* ``hooks``: observers of the worker's named points, for tests
  (``add_observer``); the command line never exposes them.
"""
from __future__ import annotations

from .hooks import add_observer
from .intake import Decision, Intake
from .notify import Notifier
from .roots import Roots
from .service import Outcome, Service, watch
from .sidecars import rewrite as rewrite_sidecars
from .watcher import RESCAN, Matcher, Watcher
from .worker import FAILURE_STREAK, Worker

__all__ = ["FAILURE_STREAK", "RESCAN", "Decision", "Intake", "Matcher", "Notifier", "Outcome", "Roots", "Service",
           "Watcher", "Worker", "add_observer", "rewrite_sidecars", "watch"]
