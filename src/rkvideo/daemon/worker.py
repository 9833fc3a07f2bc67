"""The worker thread: claim a job, describe it, write its outputs, finish it — and the retry policy.

Why a thread of its own: the worker owns the model and runs one request at a
time. A generation can take a minute; meanwhile the main thread keeps
following the folder and pinging the watchdog. The worker has its own store
connection (an SQLite connection belongs to one thread); the database is the
only thing the two threads share.

The whole retry policy is here, decided by the kind of error
(``rkvideo.errors``), never by a list of classes:

* ``Interrupted`` (a stop was asked for): the job goes back to the queue and
  the attempt does not count;
* ``UsageError`` (a bad file: damaged, too short, a shape no model takes):
  the job fails at once, it would fail again;
* anything else, ``RuntimeFailure`` above all: the job is retried after
  ``watch.retry_backoff`` seconds, doubling with each attempt, until
  ``watch.max_attempts``; then it fails with its reason.

A runtime that fails on ``FAILURE_STREAK`` different recordings in a row is
broken, not the recordings: the worker stops and the daemon exits with a
runtime failure, so that systemd restarts it and the model is loaded afresh.

Progress (a frame encoded, a token generated, a job finished) is stamped in
``progress`` for the watchdog; stopping goes through ``Describer.abort()``.
Waiting for another process's lock on the database (``waiting``) counts as
progress: the lock is not ours to fix, and a good recording is never failed for
it. A database that fails otherwise (deleted or replaced under the daemon, a
full disk) stops the worker with one error line and the daemon exits with a
runtime failure, so that systemd starts it again on a usable database.

Every recording goes through ``timeline.describe`` in the configured mode
(``describe.mode``). In timeline mode each finished moment is stored at once
(``JobStore.keep_event``) and a restart after a crash passes the kept ones
back, so a crash loses at most the moment being described; the moments and
the summary are committed with ``done`` in one transaction (``finish``).
A shared store may take a job back while it is described (this worker's
database session ended: ``LostClaim``); the result is dropped — another try
describes the recording — and the worker goes on with the next job. A store
that cannot be reached when claiming is tried again for ``DB_PATIENCE``
seconds before the worker gives up (a runtime failure: systemd restarts it).
``drain`` (an event) ends the loop after the running job.

Observers (``rkvideo.daemon.add_observer``) are called at named points, so
tests can stop the process exactly there: ``claim`` (between jobs),
``segment`` (a moment of a timeline kept, the next not begun), ``rename`` (a
sidecar's temporary file written, not renamed), ``sidecar`` (sidecars
written, not committed) and ``commit`` (description and ``done`` written,
transaction still open).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from .. import errors, timeline
from ..store import JobStore, LostClaim, Status, StoreError, timings_text
from . import sidecars
from .intake import LINK_OUT, drop_gone, reason, unchanged
from .roots import Roots

log = logging.getLogger(__name__)

# Consecutive runtime failures on different recordings after which the daemon
# exits (a runtime failure) so that systemd restarts it and the model is loaded afresh.
FAILURE_STREAK = 3
IDLE_POLL = 1.0      # seconds between queue checks when idle (picks up `rkvideo retry`)
DB_PATIENCE = 60.0   # seconds a store that cannot be reached is tried again before the worker gives up

Observe = Callable[[str, str], None]     # observe(point, detail)


class Worker(threading.Thread):
    """Takes queued jobs one at a time and runs them through the one Describer.

    ``open_store()`` opens the worker's own connection, in its thread. ``look_again(path)`` hands a
    file that changed since it was queued back to the main thread, to settle again. ``observe``: see
    the module docstring.
    """

    def __init__(self, *, open_store: Callable[[], JobStore], describer, config, roots: Roots, worker_id: str,
                 look_again: Callable[[str], None], observe: Observe = lambda point, detail: None,
                 notices=None, wake: Callable[[], None] = lambda: None):
        super().__init__(name="rkvideo-worker", daemon=True)
        self.open_store, self.describer, self.config, self.roots = open_store, describer, config, roots
        self.worker_id, self.look_again, self.observe = worker_id, look_again, observe
        # Notifications: ``notices`` builds the outbox rows committed with each outcome, ``wake`` tells
        # the sender that there are new ones (see rkvideo.notify).
        self.notices, self.wake_sender = notices, wake
        self.stop, self.wake, self.final = threading.Event(), threading.Event(), threading.Event()
        self.drain = threading.Event()      # finish the running job, take no new one
        self.store_seconds = 0.0            # the running job's time in claim and finish (coordination)
        self.current = None                 # the job being described
        self.progress = time.monotonic()    # last frame, token or finished job
        self.failed = False                 # stopped by a runtime failure: the daemon exits with one
        self.failing: set = set()           # jobs that failed in a row, by id

    def run(self) -> None:
        store = None
        try:
            store = self.open_store()
            store.on_busy = self.waiting
            while not self.stop.is_set() and not self.drain.is_set():
                self.observe("claim", "")
                job = self.claim(store)
                if job is None:
                    if self.final.is_set():
                        return
                    self.wake.wait(IDLE_POLL)
                    self.wake.clear()
                    continue
                try:
                    self.run_job(store, job)
                except LostClaim as exc:
                    log.warning("%s [job %d]: %s", job.path, job.id, exc)
                if len(self.failing) >= FAILURE_STREAK:
                    log.error("the runtime failed on %d recordings in a row; exiting so that the service "
                              "restarts and reloads the model", len(self.failing))
                    self.failed = True
                    return
        except errors.Interrupted:      # asked to stop while waiting for the database
            log.info("worker stopped while waiting for the database")
        except StoreError as exc:
            log.error("%s", exc)
            self.failed = True
        except Exception:       # noqa: BLE001 - the daemon must report, not vanish
            log.exception("worker stopped by an unexpected error")
            self.failed = True
        finally:
            self.current = None
            if store is not None:
                store.close()

    def claim(self, store: JobStore):
        """The next job, or None; a store that cannot be reached is tried again (see the module docstring)."""
        failing_since = None
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                job = store.claim(self.worker_id)
                self.store_seconds = time.perf_counter() - start
                return job
            except LostClaim:
                raise
            except StoreError as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > DB_PATIENCE:
                    raise
                log.warning("cannot take a job: %s (trying again)", exc)
                self.wake.wait(IDLE_POLL)
        return None

    def touch(self, *_) -> None:
        # Progress only: raising here would have to cross the runtime's threads or a ctypes
        # callback. Stopping goes through Describer.abort() instead.
        self.progress = time.monotonic()

    def waiting(self, waited: float) -> None:
        """The store's ``on_busy``: another process holds the database's lock. Keep the watchdog fed;
        a stop ends the wait."""
        self.touch()
        if self.stop.is_set():
            raise errors.Interrupted("stopped while waiting for the database")

    def run_job(self, store: JobStore, job) -> None:
        path = job.path
        self.current, self.progress = job, time.monotonic()
        start = time.perf_counter()
        try:
            if self.stop.is_set():
                store.requeue(job.id)
                return
            try:
                st = os.stat(path)
            except FileNotFoundError:
                drop_gone(store, job, running=True)
                return
            if self.roots.reaches_out(path):      # replaced by a link out since it was queued
                store.put(path, Status.SKIPPED, root=self.roots.root_of(path), size=st.st_size, mtime=st.st_mtime,
                          error=LINK_OUT)
                log.info("skipped %s [job %d]: %s", path, job.id, LINK_OUT)
                return
            if not unchanged(job, st):
                # Not due again before the main thread has seen it settle, or this would spin.
                store.requeue(job.id, delay=2 * self.config.watch.settle_seconds + 1)
                self.look_again(path)
                log.info("%s [job %d]: changed since it was queued; waiting for it to settle", path, job.id)
                return
            try:
                result = self.describe(store, job)
                if self.stop.is_set():
                    raise errors.Interrupted()  # the text may be cut short by the abort; do not keep it
            except Exception as exc:            # noqa: BLE001 - every failure is classified below
                self.failed_job(store, job, exc)
                return
            self.finish(store, job, result, time.perf_counter() - start, start)
        finally:
            self.current = None
            self.progress = time.monotonic()

    def describe(self, store: JobStore, job):
        """The recording's result in the configured mode; a timeline keeps each moment as it is finished
        and takes up the moments an interrupted run kept."""
        kept = store.kept_events(job.id)
        if kept:
            log.info("%s [job %d]: going on after %d moment(s) kept by an interrupted run", job.path, job.id,
                     len(kept))

        def keep(event) -> None:
            store.keep_event(job.id, event)
            self.touch()
            self.observe("segment", job.path)

        hooks = timeline.Hooks(on_text=self.touch, on_frame=self.touch, on_stage=self.touch, on_event=keep,
                               stopped=self.stop.is_set)
        options = timeline.Options(thumbnails=self.config.output.thumbnails)
        return timeline.describe(self.describer, job.path, options, hooks, kept=kept)

    def finish(self, store: JobStore, job, result, described: float, start: float) -> None:
        current = store.job(job.id) or job     # a rename while describing moved the job
        extra = {"describe": round(described, 4)}
        missing = []
        if self.config.output.sidecars:
            extra["sidecars"], missing = self.write_sidecars(current, job, result)
        messages = self.notices.described(current, result, extra) if self.notices else None
        committing = time.perf_counter()
        store.finish(job, result, timings=extra, before_commit=lambda: self.observe("commit", job.path),
                     messages=messages, missing_sidecars=missing)
        coordination = self.store_seconds + time.perf_counter() - committing
        if messages:
            self.wake_sender()
        self.failing.clear()
        moments = f", {len(result.events)} moments" if result.events else ""
        log.info("done %s [job %d] %d frames%s, %s new tokens; %s; total %.2fs (queue %.1f ms)", current.path,
                 job.id, len(result.frames), moments, result.tokens.new, timings_text(result.timings),
                 time.perf_counter() - start, 1000 * coordination)

    def write_sidecars(self, current, job, result) -> tuple[float, list]:
        """The sidecars under the recording's current name; returns the seconds spent and those that
        could not be written. Those do not fail the job (the description is in the database): the
        store keeps them for a later try (see ``sidecars``)."""
        t0 = time.perf_counter()
        out_dir = self.config.resolve_path(self.config.output.dir) if self.config.output.dir else None
        missing = sidecars.write(current.path, result.as_json(), job.duration, self.config.output.sidecars, out_dir,
                                 self.roots.first_containing(current.path),
                                 before_rename=lambda path: self.observe("rename", str(path)))
        self.observe("sidecar", current.path)
        return round(time.perf_counter() - t0, 4), missing

    # ------------------------------------------------------------ the retry policy

    def failed_job(self, store: JobStore, job, exc: Exception) -> None:
        """Requeue, fail or retry ``job`` by the kind of ``exc`` (see the module docstring)."""
        if isinstance(exc, errors.Interrupted):
            store.requeue(job.id)
            log.info("stopped while describing %s [job %d]; it stays queued", job.path, job.id)
            return
        permanent = isinstance(exc, errors.UsageError)
        error = reason(exc, job.path) if permanent else f"{type(exc).__name__}: {exc}"
        if not os.path.lexists(job.path):
            drop_gone(store, job, running=True)
            return
        limit = self.config.watch.max_attempts
        if permanent or job.attempts >= limit:
            store.fail(job.id, error, messages=self.notices.failed(job, error) if self.notices else None)
            self.wake_sender()
            log.error("failed %s [job %d] after %d attempt%s: %s", job.path, job.id, job.attempts,
                      "" if job.attempts == 1 else "s", error)
        else:
            delay = backoff(self.config.watch.retry_backoff, job.attempts)
            store.fail(job.id, error, retry_in=delay)
            log.warning("retry %s [job %d] in %.0fs (attempt %d of %d failed): %s", job.path, job.id, delay,
                        job.attempts, limit, error)
        if not permanent:
            self.failing.add(job.id)


def backoff(first: float, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: ``first``, doubling each time."""
    return first * 2 ** (attempts - 1)
