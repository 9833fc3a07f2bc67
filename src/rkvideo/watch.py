"""``rkvideo watch``: describe every recording dropped into a folder, exactly once.

Why this shape:

* Two threads. The main thread owns everything that must stay responsive —
  signals, file-system events, settle detection, queueing, systemd
  notifications — and the worker thread owns the model and runs one request
  at a time. A generation can take a minute; the folder is still followed
  and the systemd watchdog still pinged meanwhile. Each thread has its own
  SQLite connection; the database is the only thing they share.
* The queue lives in SQLite, not in memory (see ``store``): a crash, kill -9
  or power cut loses at most the running request, which is described again
  after the restart. In-memory state is only the list of files still
  settling, and the start-up scan rebuilds it.
* A file is queued only when it has stopped changing (size and mtime the same
  for ``watch.settle_seconds``) and its container opens, so a recording still
  being written is never captioned half-way. Files are fingerprinted when
  queued so a copy under another name is skipped, and a file renamed while
  the daemon was down keeps its job and description.
* The watchdog ping is sent only while the worker makes progress (a frame
  encoded, a token generated, a job finished), so a runtime that hangs gets
  the service restarted by systemd instead of pinging forever. The main thread
  also pings once per file while it scans folders and queues a batch: a first
  start on a large archive on an SD card or NFS fingerprints and probes
  thousands of files in one go, longer than ``WatchdogSec``.
"""
from __future__ import annotations

import fnmatch
import logging
import os
import queue
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("rkvideo.watch")

# Consecutive runtime failures on different recordings after which the daemon
# exits (status 1) so that systemd restarts it and the model is loaded afresh.
FAILURE_STREAK = 3
IDLE_POLL = 1.0      # seconds between queue checks when idle (picks up `rkvideo retry`)
# Seconds between full rescans of the folders. inotify misses writes made by other machines to a
# network share and drops events when its queue overflows (thousands of files at once); a rescan
# costs one stat and one indexed lookup per file, so nothing stays unnoticed for long.
RESCAN = 600.0


class Stopping(Exception):
    """Raised inside a request when the daemon is asked to stop."""


def add_parser(sub) -> None:
    from .cli import _add_config, _formatter
    p = sub.add_parser(
        "watch", formatter_class=_formatter, help="describe every new recording in folders (daemon)",
        description="Follow folders where cameras, NVRs or dashcams drop recordings and describe each new "
                    "recording exactly once, storing the text in a searchable database (and sidecar files if "
                    "output.sidecars is set). On start the folders are scanned for recordings that arrived while "
                    "the daemon was down; then new and moved-in files are followed. A file is described once it "
                    "has stopped growing for watch.settle_seconds. The model is loaded once. Runs in the "
                    "foreground; under systemd it reports READY=1 and watchdog pings (see systemd/rkvideo.service).",
        epilog="""examples:
  rkvideo watch /srv/cameras                          run until stopped (Ctrl-C or SIGTERM)
  rkvideo watch /srv/cameras/door /srv/cameras/yard --db /var/lib/rkvideo/rkvideo.db
  rkvideo watch /srv/cameras --once                   describe the backlog, then exit (cron)

Then: rkvideo list, rkvideo search "red car", rkvideo show PATH, rkvideo retry.
Settings: [watch] patterns, recursive, settle_seconds, max_attempts, retry_backoff, db;
[output] sidecars, dir. Exit status: 0 stopped cleanly, 1 runtime failure (also a folder that is not
there yet: systemd tries again), 2 bad usage or configuration.""")
    p.add_argument("folders", nargs="+", metavar="DIR", help="folders to follow")
    p.add_argument("--db", metavar="PATH", help="database file (default: watch.db from the config)")
    p.add_argument("--once", action="store_true", help="describe what is there now, then exit")
    p.add_argument("--verbose", "-v", action="store_true", help="log every file event and queue decision")
    _add_config(p)
    p.set_defaults(func=cmd_watch)


def open_describer(config):
    """Load the models once. (Tests swap this function for one that injects a test-double runtime.)"""
    from . import pipeline
    return pipeline.Describer(config)


def cmd_watch(args) -> int:
    from . import store
    from .cli import EXIT_RUNTIME, CLIError, load_config
    config = load_config(args)
    roots = []
    for folder in args.folders:
        path = Path(folder).expanduser()
        # A folder that is not there (yet) is a runtime condition: a network share or USB disk mounted
        # late. Status 1 lets systemd try again; status 2 (no restart) is kept for what is wrong as given.
        try:
            st = path.stat()
        except FileNotFoundError:
            raise CLIError(f"{folder}: folder not found (not mounted yet? the service tries again every "
                           f"RestartSec; RequiresMountsFor= in the unit waits for the mount)", EXIT_RUNTIME) from None
        except OSError as exc:
            raise CLIError(f"{folder}: cannot reach the folder: {exc.strerror}", EXIT_RUNTIME) from None
        if not stat.S_ISDIR(st.st_mode):
            raise CLIError(f"{folder}: not a folder (give the folder the recordings are written to)")
        roots.append(path.resolve())
    _check_sidecar_folders(config, roots)
    db = Path(args.db).expanduser() if args.db else config.resolve_path(config.watch.db)
    _setup_logging(args.verbose)
    try:
        daemon = Daemon(config, roots, db, once=args.once)
    except store.StoreError as exc:
        raise CLIError(str(exc), EXIT_RUNTIME) from None
    return daemon.run()


def _check_sidecar_folders(config, roots: list) -> None:
    """Under output.dir, sidecars are nested by the watched folder's name: two folders with one name
    would write into the same place."""
    from .cli import CLIError
    if not (config.output.sidecars and config.output.dir):
        return
    seen = {}
    for root in roots:
        other = seen.setdefault(root.name, root)
        if other != root:
            out = config.resolve_path(config.output.dir) / root.name
            raise CLIError(f"{other} and {root}: the sidecars of both would go to {out} (output.dir nests them "
                           f"by folder name; watch folders with different names, or leave output.dir unset)")


def _setup_logging(verbose: bool) -> None:
    # journald stamps each line itself; a terminal or a log file needs the time.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO,
                        format=stamp + "%(levelname)s %(message)s", force=True)


# ------------------------------------------------------------------ helpers

class Matcher:
    """File-name patterns, case-insensitive (cameras write .MP4 as often as .mp4). Hidden names never match:
    they are temporary files of copy tools and of our own sidecar writer."""

    def __init__(self, patterns):
        self.patterns = [p.lower() for p in patterns]

    def __call__(self, path: str) -> bool:
        name = os.path.basename(path)
        if name.startswith("."):
            return False
        name = name.lower()
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


class Notifier:
    """sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET."""

    def __init__(self):
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = None
        self.clock = time.monotonic
        usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        mine = not pid or pid == str(os.getpid())
        self.watchdog = int(usec) / 1e6 if usec and usec.isdigit() and int(usec) > 0 and mine else None
        self.last_ping = 0.0

    def send(self, message: str) -> None:
        if not self.address:
            return
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never wait for the reader: a full socket queue must not stall the daemon.
            self.sock.sendto(message.encode(), socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", message, exc)

    def ping(self, healthy: bool) -> None:
        """WATCHDOG=1, at most four times per watchdog interval: cheap enough to call per file."""
        if not self.watchdog:
            return
        now = self.clock()
        if healthy and now - self.last_ping >= self.watchdog / 4:
            self.send("WATCHDOG=1")
            self.last_ping = now

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def _same(job: dict, st) -> bool:
    """The job's recorded size and mtime are the file's."""
    return job["size"] == st.st_size and job["mtime"] is not None and abs(job["mtime"] - st.st_mtime) < 1e-6


def _reason(exc: Exception, path: str) -> str:
    """An error without the file name in front: the job row and the log line name the file already."""
    text = str(exc)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


# ------------------------------------------------------------------ daemon

class Daemon:
    def __init__(self, config, roots: list, db_path: Path, once: bool = False):
        from . import store
        self.config, self.roots, self.db_path, self.once = config, roots, db_path, once
        self.root_paths = {str(root) for root in roots}
        self.store = store.Store(db_path)
        try:
            self.store.lock_daemon()
        except store.StoreError:
            self.store.close()
            raise
        self.matcher = Matcher(config.watch.patterns)
        self.settle = config.watch.settle_seconds
        self.pending: dict = {}          # path -> [(size, mtime_ns), monotonic time it was last seen changing]
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.signalled = 0
        self.notifier = Notifier()
        self.worker = None
        self.status, self.status_at = "", 0.0
        self.bad_names: set = set()
        # Sidecars beside the recordings: the scan also clears temporary files of interrupted writes.
        self.sidecars_beside = bool(config.output.sidecars) and not config.output.dir

    # ---------------------------------------------------------------- run

    def run(self) -> int:
        from . import pipeline
        from .cli import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        observer = describer = None
        try:
            self._recover()
            self._clean_output_dir()
            log.info("loading the model (%s)", self.config.model.profile)
            try:
                describer = open_describer(self.config)
            except pipeline.SetupError as exc:   # includes an unknown model.profile
                log.error("%s", exc)
                return EXIT_USAGE
            except RuntimeError as exc:
                log.error("cannot load the model: %s", exc)
                return EXIT_RUNTIME
            if self.signalled:
                return EXIT_OK
            log.info("model loaded in %.1fs; watching %s; database %s", getattr(describer, "load_seconds", 0.0),
                     ", ".join(map(str, self.roots)), self.db_path)
            self.worker = Worker(self, describer)
            self.worker.start()
            if not self.once:
                observer = self._observe()
            self.notifier.send("READY=1\nSTATUS=scanning")
            for root in self.roots:
                self._scan(str(root))
            code = self._loop()
            return code
        except OSError as exc:
            log.error("%s", exc)
            return EXIT_RUNTIME
        except Exception:       # noqa: BLE001 - one logged error, then systemd restarts us
            log.exception("stopped by an unexpected error")
            return EXIT_RUNTIME
        finally:
            self.notifier.send("STOPPING=1")
            if observer is not None:
                observer.stop()
            self._stop_worker(describer)
            if observer is not None:
                observer.join(5)
            if describer is not None:
                describer.close()
            self._summary()
            self.store.close()
            self.notifier.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        # Only a flag: anything that takes a lock here could deadlock with the interrupted code.
        if self.signalled:
            self._exit_now(signum)
        self.signalled = signum

    def _exit_now(self, signum: int) -> None:
        """A second SIGINT/SIGTERM: exit without waiting for a runtime that does not stop on abort().

        The running job stays ``running`` in the database; the next start queues it again and counts
        the attempt, as after a crash (the runtime may hang on this very file). os.write, not logging:
        a signal handler must not wait for the logging or stderr locks of the code it interrupted.
        """
        current = self.worker.current if self.worker is not None else None
        job = f"; {current['path']} [job {current['id']}] is queued again at the next start" if current else ""
        stamp = "" if os.environ.get("JOURNAL_STREAM") else time.strftime("%Y-%m-%d %H:%M:%S ")
        try:
            os.write(2, f"{stamp}WARNING second signal ({signum}): exiting at once, without waiting for "
                        f"the runtime{job}\n".encode(errors="backslashreplace"))
        finally:
            os._exit(128 + signum)

    def _loop(self) -> int:
        from .cli import EXIT_OK, EXIT_RUNTIME
        tick = min(0.25, max(0.02, self.settle / 4))
        deadline = time.monotonic() + self.settle + tick      # --once: how long the backlog may settle
        scanned = time.monotonic()
        while not self.signalled:
            if not self.once and time.monotonic() - scanned >= RESCAN:
                for root in self.roots:
                    self._scan(str(root))
                scanned = time.monotonic()
            self._drain()
            self._settle_pending()
            self._report()
            if not self.worker.is_alive():
                return self.worker.exit_code
            if self.once and (not self.pending or time.monotonic() > deadline):
                for path in sorted(self.pending):
                    log.warning("%s: still being written, left for the next run", path)
                self.pending.clear()
                self.worker.final.set()
                self.worker.wake.set()
            time.sleep(tick)
        log.info("stopping (signal %d)", self.signalled)
        return EXIT_OK if self.worker.exit_code != EXIT_RUNTIME else EXIT_RUNTIME

    def _report(self) -> None:
        self._ping()
        worker = self.worker
        now = time.monotonic()
        if now - self.status_at >= 1.0:       # `systemctl status` needs no more than one a second
            current = worker.current
            status = f"describing {current['path']}" if current else "idle"
            if status != self.status:
                self.status, self.status_at = status, now
                self.notifier.send(f"STATUS={status}")

    def _ping(self) -> None:
        """The watchdog ping, if the worker is idle or making progress. Loops over files call it per file."""
        if self.notifier.watchdog is None:
            return
        worker = self.worker
        self.notifier.ping(worker is None or worker.current is None
                           or time.monotonic() - worker.progress < self.notifier.watchdog)

    def _stop_worker(self, describer) -> None:
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

    def _summary(self) -> None:
        try:
            counts = self.store.counts()
        except Exception:   # noqa: BLE001 - the summary is informative only
            return
        log.info("queue: %s", ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty")

    # ------------------------------------------------------------ start-up

    def _recover(self) -> None:
        from . import store
        requeued, failed = self.store.recover(self.config.watch.max_attempts)
        for job in requeued:
            log.warning("%s [job %d]: interrupted last time, queued again", job["path"], job["id"])
        for job in failed:
            log.error("failed %s [job %d]: the daemon stopped during each of its %d attempts",
                      job["path"], job["id"], job["attempts"])
        # Queued, failed or skipped jobs whose file is gone have nothing left to do.
        for job in self.store.jobs():
            if store.valid_name(job["path"]) and not os.path.lexists(job["path"]):
                self._forget(job)

    def _clean_output_dir(self) -> None:
        """Temporary files of sidecar writes that a kill interrupted (the scan does this beside recordings)."""
        from . import sidecars
        if not (self.config.output.sidecars and self.config.output.dir):
            return
        out = self.config.resolve_path(self.config.output.dir)
        for dirpath, _, filenames in os.walk(out):
            self._removed(sidecars.remove_stale_temps(dirpath, filenames, self.matcher))

    def _removed(self, paths: list) -> None:
        for path in paths:
            log.info("removed %s: a sidecar write was interrupted there", path)

    def _observe(self):
        from watchdog.observers import Observer
        handler = _handler(self.events)
        observer = Observer()
        for root in self.roots:
            observer.schedule(handler, str(root), recursive=self.config.watch.recursive)
        try:
            observer.start()
        except OSError as exc:
            raise OSError(f"cannot follow the folders: {exc} (too many folders for inotify? raise "
                          f"fs.inotify.max_user_watches with sysctl)") from None
        return observer

    def _followed(self, path: str) -> bool:
        """``path`` is where the daemon looks: directly in a watched folder, or anywhere below one if
        ``watch.recursive``."""
        if self.config.watch.recursive:
            return any(path.startswith(f"{root}/") for root in self.root_paths)
        return os.path.dirname(path) in self.root_paths

    def _scan(self, folder: str) -> None:
        """Every matching file (and folder named like a video) at or below ``folder`` that is followed."""
        if folder not in self.root_paths:
            # A folder created or moved in after the start.
            if not self._followed(folder):
                return
            if self.matcher(folder):
                self._watch(folder)         # a folder named like a video: recorded as skipped
            if not self.config.watch.recursive:
                return                      # not recursive: only the watched folders' own files
        from . import sidecars
        for dirpath, dirnames, filenames in os.walk(folder, onerror=lambda e: log.error("%s", e)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            if self.sidecars_beside:
                self._removed(sidecars.remove_stale_temps(dirpath, filenames, self.matcher))
            for name in dirnames + sorted(filenames):
                self._ping()        # a stat and a lookup per file: thousands of them add up
                if self.matcher(name):
                    self._watch(os.path.join(dirpath, name))
            if not self.config.watch.recursive:
                break

    # -------------------------------------------------------------- events

    def _drain(self) -> None:
        while True:
            try:
                kind, src, dest, is_dir = self.events.get_nowait()
            except queue.Empty:
                return
            log.debug("event %s %s%s", kind, src, f" -> {dest}" if dest else "")
            if kind == "moved":
                self._moved(src, dest, is_dir)
            elif kind == "deleted":
                self._deleted(src, is_dir)
            elif is_dir:
                if kind == "created":
                    self._scan(src)
            elif self.matcher(src):
                self._watch(src)

    def _watch(self, path: str) -> None:
        """Start waiting for ``path`` to settle, unless it is already known as it is."""
        if path in self.pending:
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._record(path, "failed", f"cannot open: {exc.strerror}")
            return
        job = self.store.job_at(path)
        if job is not None and _same(job, st):
            return
        self.pending[path] = [(st.st_size, st.st_mtime_ns), time.monotonic()]

    def _moved(self, src: str, dest: str, is_dir: bool) -> None:
        if is_dir:
            moved = self.store.move_folder(src, dest)
            for path in [p for p in self.pending if p.startswith(src + "/")]:
                del self.pending[path]
            if moved:
                log.info("renamed folder %s -> %s (%d jobs follow)", src, dest, moved)
            self._scan(dest)
            return
        self.pending.pop(src, None)
        job = self.store.job_at(src)
        inside = self.matcher(dest) and self._followed(dest)
        if inside and job is not None and self.store.job_at(dest) is None:
            self.store.move(job["id"], dest)
            log.info("renamed %s -> %s [job %d]", src, dest, job["id"])
        elif job is not None:
            self._forget(job)
        if inside:
            self._watch(dest)

    def _deleted(self, path: str, is_dir: bool) -> None:
        if is_dir:
            for p in [p for p in self.pending if p.startswith(path + "/")]:
                del self.pending[p]
            for job in self.store.jobs_under(path):
                self._forget(job)
        self.pending.pop(path, None)
        job = self.store.job_at(path)
        if job is not None:
            self._forget(job)

    def _forget(self, job: dict) -> None:
        # Done jobs stay: their descriptions outlive the recording. A running job is left to its worker.
        if job["status"] in ("queued", "failed", "skipped"):
            _drop_gone(self.store, job)

    # ------------------------------------------------------------- settling

    def _settle_pending(self) -> None:
        now = time.monotonic()
        ready = []
        for path, entry in list(self.pending.items()):
            self._ping()
            try:
                st = os.stat(path)
            except OSError:
                del self.pending[path]
                continue
            key = (st.st_size, st.st_mtime_ns)
            if key != entry[0]:
                entry[0], entry[1] = key, now
            elif now - entry[1] >= self.settle:
                del self.pending[path]
                ready.append((st.st_mtime_ns, path, st))
        for _, path, st in sorted(ready):       # oldest recording first
            if self.signalled:
                return
            self._ping()                        # fingerprint and probe: can be slow on SD cards and NFS
            try:
                self._intake(path, st)
            except Exception as exc:        # noqa: BLE001 - a file must never crash-loop the service
                log.exception("%s: cannot be queued", path)
                self._record(path, "failed", f"cannot be queued: {type(exc).__name__}: {exc}", st)
        if ready:
            self.worker.wake.set()

    def _intake(self, path: str, st) -> None:
        """A settled file: queue it, or record why not (bad file, duplicate, same as before)."""
        from . import store, media
        if not store.valid_name(path):
            # SQLite text must be UTF-8; such a file cannot even be listed. Say so once per run.
            if path not in self.bad_names:
                self.bad_names.add(path)
                log.error("skipped %s: file name is not valid UTF-8 (rename the file)", store.db_text(path))
            return
        if stat.S_ISDIR(st.st_mode):
            self._record(path, "skipped", "is a folder, not a video file")
            return
        if not stat.S_ISREG(st.st_mode):
            self._record(path, "skipped", "not a regular file (a pipe, socket or device)")
            return
        job = self.store.job_at(path)
        if job is not None and _same(job, st):
            return
        if job is not None and job["status"] == "running":
            self._watch(path)           # changed under the worker: look again once it is done
            return
        if st.st_size == 0:
            self._record(path, "failed", "empty file (0 bytes)", st)
            return
        try:
            digest = store.fingerprint(path)
        except OSError as exc:
            fix = " (let the rkvideo user read it, then run `rkvideo retry`)" \
                if isinstance(exc, PermissionError) else ""
            self._record(path, "failed", f"cannot read: {exc.strerror}{fix}", st)
            return
        if job is not None and job["hash"] == digest:
            self.store.touch(job["id"], st.st_size, st.st_mtime)
            return
        original = self.store.original(digest, path)
        if original is not None:
            if job is None and not os.path.lexists(original["path"]):
                self.store.move(original["id"], path)
                self.store.touch(original["id"], st.st_size, st.st_mtime)
                log.info("renamed %s -> %s [job %d] (found by content)", original["path"], path, original["id"])
                return
            self._record(path, "skipped", store.same_content(original), st, digest=digest,
                         duplicate_of=original["id"])
            return
        try:
            info = media.probe(path)
        except media.MediaError as exc:
            self._record(path, "failed", _reason(exc, path), st, digest=digest)
            return
        job_id = self.store.put(path, "queued", size=st.st_size, mtime=st.st_mtime, digest=digest,
                                duration=info.duration)
        log.info("queued %s [job %d] (%.1fs of video)", path, job_id, info.duration)

    def _record(self, path: str, status: str, error: str, st=None, digest=None, duplicate_of=None) -> None:
        """A file that will not be described: kept as a failed or skipped job with the reason."""
        from . import store
        job = self.store.job_at(path)
        if job is not None and job["status"] == status and job["error"] == error and (st is None or _same(job, st)):
            return
        job_id = self.store.put(path, status, size=st.st_size if st else None, mtime=st.st_mtime if st else None,
                                digest=digest, error=error, duplicate_of=duplicate_of)
        level = logging.INFO if status == "skipped" else logging.ERROR
        log.log(level, "%s %s [job %d]: %s", status, store.db_text(path), job_id, error)


def _drop_gone(db, job: dict, running: bool = False) -> str:
    """The file of ``job`` was deleted: the job leaves the queue (``Store.drop`` says when it stays),
    and a copy of an undescribed original is queued in its place. Logs what happened."""
    what, promoted = db.drop(job["id"], running=running)
    if what == "dropped":
        log.info("dropped %s [job %d]: file deleted", job["path"], job["id"])
    elif what == "kept" and job["status"] != "done":
        log.info("done %s [job %d]: file deleted before it was described again; its earlier description is kept",
                 job["path"], job["id"])
    if promoted:
        log.info("queued %s [job %d]: its original was deleted before it was described", promoted["path"],
                 promoted["id"])
    return what


def _handler(events: queue.SimpleQueue):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        """Runs on watchdog's thread: only hands the event over to the main loop."""

        def on_any_event(self, event):
            if event.event_type in ("opened", "closed_no_write"):
                return
            events.put((event.event_type, os.fsdecode(event.src_path),
                        os.fsdecode(getattr(event, "dest_path", "") or ""), event.is_directory))

    return Handler()


# ------------------------------------------------------------------ worker

class Worker(threading.Thread):
    """Takes queued jobs one at a time and runs them through the one Describer."""

    def __init__(self, daemon: Daemon, describer):
        super().__init__(name="rkvideo-worker", daemon=True)
        self.owner, self.describer = daemon, describer
        self.config = daemon.config
        self.stop, self.wake, self.final = threading.Event(), threading.Event(), threading.Event()
        self.current = None
        self.progress = time.monotonic()
        self.exit_code = 0
        self.failing: set = set()

    def run(self) -> None:
        from . import store
        from .cli import EXIT_RUNTIME
        db = None
        try:
            db = store.Store(self.owner.db_path)
            while not self.stop.is_set():
                job = db.claim_next()
                if job is None:
                    if self.final.is_set():
                        return
                    self.wake.wait(IDLE_POLL)
                    self.wake.clear()
                    continue
                self._run(db, job)
                if len(self.failing) >= FAILURE_STREAK:
                    log.error("the runtime failed on %d recordings in a row; exiting so that the service "
                              "restarts and reloads the model", len(self.failing))
                    self.exit_code = EXIT_RUNTIME
                    return
        except Exception:       # noqa: BLE001 - the daemon must report, not vanish
            log.exception("worker stopped by an unexpected error")
            self.exit_code = EXIT_RUNTIME
        finally:
            self.current = None
            if db is not None:
                db.close()

    def _touch(self, *_):
        # Progress only: raising here would have to cross the runtime's threads or a ctypes
        # callback. Stopping goes through Describer.abort() instead.
        self.progress = time.monotonic()

    def _run(self, db, job: dict) -> None:
        from . import assemble, budget, llm, media
        path, job_id = job["path"], job["id"]
        self.current, self.progress = job, time.monotonic()
        start = time.perf_counter()
        try:
            if self.stop.is_set():
                db.requeue(job_id)
                return
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._gone(db, job)
                return
            if not _same(job, st):
                # Not due again before the main thread has seen it settle, or this would spin.
                db.requeue(job_id, delay=2 * self.config.watch.settle_seconds + 1)
                self.owner.events.put(("modified", path, "", False))   # let it settle again
                log.info("%s [job %d]: changed since it was queued; waiting for it to settle", path, job_id)
                return
            try:
                result = self.describer.describe([path], kind="video", on_frame=self._touch, on_text=self._touch)
                if self.stop.is_set():
                    raise Stopping()    # the text may be cut short by the abort; do not keep it
            except (Stopping, llm.Interrupted):
                db.requeue(job_id)
                log.info("stopped while describing %s [job %d]; it stays queued", path, job_id)
                return
            except (media.MediaError, budget.BudgetError, assemble.ShapeError) as exc:
                self._failed(db, job, _reason(exc, path), permanent=True)
                return
            except Exception as exc:    # noqa: BLE001 - runtime errors are retried, whatever their type
                self._failed(db, job, f"{type(exc).__name__}: {exc}", permanent=False)
                return
            described = time.perf_counter() - start
            self._finish(db, job, result, described, start)
        finally:
            self.current = None
            self.progress = time.monotonic()

    def _finish(self, db, job: dict, result, described: float, start: float) -> None:
        from . import sidecars, store
        current = db.job(job["id"]) or job     # a rename while describing moved the job
        extra = {"describe": round(described, 4)}
        kinds = self.config.output.sidecars
        if kinds:
            t0 = time.perf_counter()
            out_dir = self.config.resolve_path(self.config.output.dir) if self.config.output.dir else None
            root = next((r for r in self.owner.roots if current["path"].startswith(f"{r}/")), None)
            try:
                sidecars.write_all(current["path"], result.as_json(), job.get("duration"), kinds, out_dir, root)
            except OSError as exc:
                log.error("%s: sidecar not written: %s", current["path"], exc)
            extra["sidecars"] = round(time.perf_counter() - t0, 4)
        db.finish(job, result, timings=extra)
        self.failing.clear()
        total = time.perf_counter() - start
        log.info("done %s [job %d] %d frames, %s new tokens; %s; total %.2fs", current["path"], job["id"],
                 len(result.frames), result.tokens.get("new"), store.timings_text(result.timings), total)

    def _gone(self, db, job: dict) -> None:
        _drop_gone(db, job, running=True)

    def _failed(self, db, job: dict, error: str, permanent: bool) -> None:
        path, job_id, attempts = job["path"], job["id"], job["attempts"]
        if not os.path.lexists(path):
            self._gone(db, job)
            return
        limit = self.config.watch.max_attempts
        if permanent or attempts >= limit:
            db.fail(job_id, error)
            log.error("failed %s [job %d] after %d attempt%s: %s", path, job_id, attempts,
                      "" if attempts == 1 else "s", error)
        else:
            delay = self.config.watch.retry_backoff * 2 ** (attempts - 1)
            db.fail(job_id, error, retry_in=delay)
            log.warning("retry %s [job %d] in %.0fs (attempt %d of %d failed): %s", path, job_id, delay,
                        attempts, limit, error)
        if not permanent:
            self.failing.add(job_id)
