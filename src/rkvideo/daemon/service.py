"""The daemon as a whole: start-up, the main loop, signals, and stopping.

Why this shape:

* Two threads. The main thread owns everything that must stay responsive —
  signals, file-system events, settle detection, queueing, systemd
  notifications (``watcher``, ``intake``, ``notify``) — and the worker thread
  owns the model and runs one request at a time (``worker``). A generation can
  take a minute; the folder is still followed and the systemd watchdog still
  pinged meanwhile.
* The queue lives in the store, not in memory: a crash, kill -9 or power cut
  loses at most the running request, which is described again after the
  restart. ``Service`` receives its store (opened and locked by the caller, or
  by ``watch`` below) and a way to open the worker's own connection; it never
  decides which database it runs on.
* Notifications (``rkvideo.notify``) never wait for a broker or web server:
  the worker commits their outbox rows with each description and failure,
  and the sender's own threads deliver them. The sender starts before the
  model loads (what an earlier run left is delivered at once; a refused MQTT
  login is a configuration error), and ``--once`` exits only after it
  delivered what it could within ``notify.flush_timeout``.
* ``run`` returns an ``Outcome``, not an exit status: the command line maps
  it (a configuration error must not be restarted by systemd, a runtime
  failure must). The one exception is a second SIGINT/SIGTERM, which cannot
  wait to return: the caller's ``on_second_signal`` ends the process.
* Another process holding the database's write lock is waited for, as long as
  it takes, by both threads (the store's ``on_busy``): the watchdog keeps being
  fed and a stop ends the wait. A database that is deleted or replaced under
  the daemon, or fails otherwise, ends it with one error line and a runtime
  failure: systemd starts it again, on the file now at that path or a new one.
* Several daemons may share one store (PostgreSQL). Each process has a worker
  id of its own (host:pid:random), so a restarted daemon never mistakes the
  jobs of its previous life for live ones. Every ``REPORT_SECONDS`` the main
  thread reports to the store (``rkvideo workers`` shows it), learns whether
  it was asked to drain, and gives back the jobs of workers that are gone
  (``JobStore.recover``), so a dead board's job waits seconds, not until that
  board restarts.
* Draining — finish the running job, take no new one, exit with status 0 — is
  asked for with SIGUSR1 (``systemctl kill -s USR1 rkvideo``) or through the
  store (``rkvideo workers --drain ID|HOST``, ``rkvideo watch --drain``), which
  works from any machine.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from enum import Enum

from .. import errors, notify, pipeline, printable, store
from ..store import REPORT_SECONDS, JobStore, StoreError
from . import hooks, sidecars
from .intake import Intake
from .notify import Notifier
from .own import OwnFiles
from .roots import Roots
from .watcher import RESCAN, Matcher, Watcher
from .worker import Worker

log = logging.getLogger(__name__)


class Outcome(str, Enum):
    """How ``Service.run`` ended."""
    STOPPED = "stopped"                             # asked to stop, or --once done
    RUNTIME_FAILURE = "runtime failure"             # worth a restart: a runtime, a database, a folder
    CONFIGURATION_ERROR = "configuration error"     # a restart cannot help: fix the configuration


def worker_name() -> str:
    """This process's worker id: ``host:pid:random``, never the same for two processes or two lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def die_by_signal(signum: int) -> None:
    """End the process by ``signum`` itself, with its default action."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


class Service:
    """Follows ``roots`` and describes each settled recording once, into ``store``.

    ``open_store()`` opens another connection to the same store (the worker's, in its own thread);
    ``open_describer(config)`` loads the models (``pipeline.Describer``); ``once``: describe what
    is there now, then stop; ``on_second_signal(signum)``: ends the process at once (default: die
    by that signal).

    ``rescan_seconds``, ``report_seconds`` and ``follow_events`` are public settings for tests (a
    network share gives no events, only rescans find its files); the command line never changes them.
    """

    rescan_seconds: float = RESCAN
    report_seconds: float = REPORT_SECONDS
    follow_events: bool = True

    def __init__(self, config, roots, store: JobStore, *, open_store: Callable[[], JobStore],
                 open_describer: Callable = pipeline.Describer, once: bool = False, worker_id: str | None = None,
                 on_second_signal: Callable[[int], None] = die_by_signal):
        self.config, self.store, self.once = config, store, once
        store.on_busy = self.waiting
        self.roots = Roots(roots, config.watch.recursive, config.watch.follow_symlinks)
        self.open_store, self.open_describer, self.on_second_signal = open_store, open_describer, on_second_signal
        self.worker_id = worker_id or worker_name()
        # Raises UsageError for two watched folders that would be one camera on MQTT.
        self.notices = notify.Notices(config, self.roots.folders)
        self.sender = notify.Sender(config, self.roots.folders, open_store)
        self.intake = Intake(store, self.roots, notices=self.notices, wake=self.sender.wake)
        out_dir = config.resolve_path(config.output.dir) if config.output.dir else None
        self.watcher = Watcher(config, self.roots, self.intake, ping=self.ping, stopping=self.stopping,
                               rescan=None if once else self.rescan_seconds,
                               own=OwnFiles(store.files(), out_dir, Matcher(config.watch.patterns)),
                               after_scan=self.rewrite_sidecars)
        self.notifier = Notifier()
        self.worker: Worker | None = None
        self.signalled = 0
        self.stop_asked = False
        self.drain_asked = False
        self.reported = 0.0             # monotonic time of the last report to the store

    # ------------------------------------------------------------ run

    def run(self) -> Outcome:
        previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self.on_drain_signal)
        describer = None
        sending = False
        try:
            log.info("worker %s", self.worker_id)
            self.store.report(self.worker_id, "starting")
            self.recover()
            try:
                self.sender.start(self.store)
                sending = True
            except errors.UsageError as exc:    # the broker refused the login
                log.error("%s", exc)
                return Outcome.CONFIGURATION_ERROR
            self.watcher.clean_output_dir()
            log.info("loading the model (%s)", self.config.model.profile)
            try:
                describer = self.open_describer(self.config)
            except errors.UsageError as exc:    # a missing model file, an unknown model.profile
                log.error("%s", exc)
                return Outcome.CONFIGURATION_ERROR
            except RuntimeError as exc:         # errors.RuntimeFailure, or a runtime library's own
                log.error("cannot load the model: %s", exc)
                return Outcome.RUNTIME_FAILURE
            if self.stopping():
                return Outcome.STOPPED
            log.info("model loaded in %.1fs; watching %s; database %s", describer.load_seconds, self.roots,
                     self.store.location)
            self.start_worker(describer)
            if not self.once and self.follow_events:
                self.watcher.follow()
            self.notifier.send("READY=1\nSTATUS=scanning")
            self.watcher.scan_all()
            return self.loop()
        except errors.Interrupted:     # a stop while waiting for the database
            return Outcome.STOPPED
        except (OSError, StoreError) as exc:
            log.error("%s", exc)
            return Outcome.RUNTIME_FAILURE
        except Exception:       # noqa: BLE001 - one logged error, then systemd restarts us
            log.exception("stopped by an unexpected error")
            return Outcome.RUNTIME_FAILURE
        finally:
            self.notifier.send("STOPPING=1")
            self.watcher.stop()
            self.stop_worker(describer)
            self.watcher.join(5)
            if describer is not None:
                describer.close()
            if sending:
                self.stop_sender()
            with contextlib.suppress(Exception):      # informative only; the database may be what failed
                self.store.report(self.worker_id, "stopped")
            self.summary()
            self.notifier.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start_worker(self, describer) -> None:
        self.worker = Worker(open_store=self.open_store, describer=describer, config=self.config, roots=self.roots,
                             worker_id=self.worker_id, look_again=self.watcher.look_again, observe=hooks.observe,
                             notices=self.notices, wake=self.sender.wake)
        self.worker.start()

    def loop(self) -> Outcome:
        settle = self.config.watch.settle_seconds
        tick = min(0.25, max(0.02, settle / 4))
        deadline = time.monotonic() + settle + tick      # --once: how long the backlog may settle
        worker = self.worker
        while not self.stopping():
            if self.watcher.step():
                worker.wake.set()
            self.notifier.report(worker.current, worker.progress)
            self.heartbeat()
            if self.drain_asked and not worker.drain.is_set():
                log.info("draining: finishing the current job, taking no new one, then exiting")
                worker.drain.set()
                worker.wake.set()
            if not worker.is_alive():
                if worker.drain.is_set() and not worker.failed:
                    log.info("drained: no job running; exiting")
                return Outcome.RUNTIME_FAILURE if worker.failed else Outcome.STOPPED
            if self.once and (not self.watcher.pending or time.monotonic() > deadline):
                self.watcher.give_up()
                worker.final.set()
                worker.wake.set()
            time.sleep(tick)
        if self.signalled:
            log.info("stopping (signal %d)", self.signalled)
        else:
            log.info("stopping")
        return Outcome.RUNTIME_FAILURE if worker.failed else Outcome.STOPPED

    # ------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Ask the daemon to stop, as SIGTERM does: the running request is aborted and requeued."""
        self.stop_asked = True

    def stopping(self) -> bool:
        return bool(self.signalled) or self.stop_asked

    def on_drain_signal(self, signum, frame) -> None:
        # SIGUSR1: finish the running job, take no new one, exit. Only a flag (see on_signal).
        self.drain_asked = True

    def on_signal(self, signum, frame) -> None:
        # Only a flag: anything that takes a lock here could deadlock with the interrupted code.
        if self.signalled:
            self.exit_now(signum)
        self.signalled = signum

    def exit_now(self, signum: int) -> None:
        """A second SIGINT/SIGTERM: exit without waiting for a runtime that does not stop on abort().

        The running job stays ``running`` in the store; the next start queues it again and counts
        the attempt, as after a crash (the runtime may hang on this very file). os.write, not logging:
        a signal handler must not wait for the logging or stderr locks of the code it interrupted.
        """
        current = self.worker.current if self.worker is not None else None
        job = (f"; {printable.line(current.path)} [job {current.id}] is queued again at the next start"
               if current else "")
        stamp = "" if os.environ.get("JOURNAL_STREAM") else time.strftime("%Y-%m-%d %H:%M:%S ")
        try:
            os.write(2, f"{stamp}WARNING second signal ({signum}): exiting at once, without waiting for "
                        f"the runtime{job}\n".encode(errors="backslashreplace"))
        finally:
            self.on_second_signal(signum)
            die_by_signal(signum)       # in case the callback returned

    def stop_worker(self, describer) -> None:
        worker = self.worker
        if worker is None:
            return
        worker.stop.set()
        worker.wake.set()
        waited = False
        while worker.is_alive():
            # Repeated: an abort that arrives between encode and generate is not lost.
            if describer is not None:
                describer.abort()
            worker.join(0.2)
            self.notifier.ping(True)
            if worker.is_alive() and not waited:
                waited = True
                log.info("waiting for the running request to stop; a second Ctrl-C or SIGTERM exits at once")

    def stop_sender(self) -> None:
        """``--once``: deliver what can be delivered within notify.flush_timeout first (not after a stop
        was asked for); then stop the delivery threads."""
        timeout = self.config.notify.flush_timeout
        if self.once and not self.stopping() and self.sender.deliveries:
            self.notifier.send("STATUS=delivering notifications")
            if not self.sender.flush(timeout, stop=self.stopping):
                log.warning("notify: not everything was delivered within notify.flush_timeout (%gs)", timeout)
        self.sender.stop(self.store)

    # ------------------------------------------------------------ start-up, health, summary

    def recover(self) -> None:
        """At start-up: jobs that a gone worker (a previous run of this daemon, or another) left running go
        back to the queue (or fail, out of attempts); jobs whose file is gone leave it."""
        self.recover_orphans()
        self.intake.forget_missing()

    def recover_orphans(self) -> None:
        requeued, failed = self.store.recover(self.worker_id, self.config.watch.max_attempts,
                                              messages=self.notices.recovered if self.notices else None)
        for job in requeued:
            log.warning("%s [job %d]: interrupted last time, queued again (worker %s is gone)", job.path, job.id,
                        job.worker)
        for job in failed:
            log.error("failed %s [job %d]: the daemon stopped during each of its %d attempts",
                      job.path, job.id, job.attempts)
        if failed:
            self.sender.wake()

    def heartbeat(self) -> None:
        """Every ``report_seconds``: tell the store this daemon lives (and whether it drains), learn
        whether it was asked to drain, and give back the jobs of workers that are gone. A database that
        cannot be reached now is tried again at the next report."""
        if time.monotonic() - self.reported < self.report_seconds:
            return
        self.reported = time.monotonic()
        try:
            if self.store.report(self.worker_id, "draining" if self.drain_asked else "running"):
                self.drain_asked = True
            self.recover_orphans()
        except StoreError as exc:
            log.warning("%s (trying again in %.0fs)", exc, self.report_seconds)

    def waiting(self, waited: float) -> None:
        """The store's ``on_busy`` on the main thread: another process holds the database's lock. Keep
        the watchdog fed (unless the worker hangs); a stop ends the wait."""
        self.ping()
        if self.stopping():
            raise errors.Interrupted("stopped while waiting for the database")

    def rewrite_sidecars(self) -> None:
        """After each full scan: the sidecars that could not be written before."""
        if self.config.output.sidecars:
            sidecars.rewrite(self.store)

    def ping(self) -> None:
        """The watchdog ping, if the worker is idle or making progress, and the store report when due.
        Loops over files call it per file."""
        if self.worker is not None:
            self.heartbeat()
        worker = self.worker
        if worker is None:
            self.notifier.heartbeat(None, 0.0)
        else:
            self.notifier.heartbeat(worker.current, worker.progress)

    def summary(self) -> None:
        try:
            counts = self.store.counts()
        except Exception:   # noqa: BLE001 - the summary is informative only
            return
        log.info("queue: %s", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty")


def watch(config, roots, database, *, once: bool = False,
          on_second_signal: Callable[[int], None] = die_by_signal) -> Outcome:
    """Open the store at ``database`` (a file for this daemon alone — ``StoreError`` when another one uses
    it — or a URL shared with other daemons), run a ``Service`` on it until it stops, and close the store.
    While an SQLite database is locked by another process at start-up, the daemon waits (systemd's start
    timeout still applies). ``roots``: the folders, a list or a dict by name."""
    names = Roots(roots).names
    jobs = store.open_store(database, on_busy=wait_at_start, roots=names)
    try:
        jobs.lock_daemon()
        service = Service(config, roots, jobs, once=once, on_second_signal=on_second_signal,
                          open_store=lambda: store.open_store(database, on_busy=wait_at_start, roots=names))
        return service.run()
    finally:
        jobs.close()


def wait_at_start(waited: float) -> None:
    """``on_busy`` before the service runs: wait for another process's lock as long as it takes (the
    service sets its own as soon as it exists, which keeps the watchdog fed and ends on a stop)."""
