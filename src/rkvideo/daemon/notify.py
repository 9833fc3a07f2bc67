"""systemd's notification protocol (sd_notify) and its watchdog, without libsystemd.

Why the watchdog ping is conditional: it is sent only while the worker makes
progress (a frame encoded, a token generated, a job finished) or is idle, so
a runtime that hangs gets the service restarted by systemd instead of being
pinged forever. The main thread also pings once per file while it scans
folders and queues a batch: a first start on a large archive on an SD card
or NFS fingerprints and probes thousands of files in one go, longer than
``WatchdogSec``. Pings are rate-limited so calling per file stays cheap.

Why never block: a notify socket whose reader is stuck or gone must not
stall the daemon, so every datagram is sent with ``MSG_DONTWAIT`` and a
failure is only logged.
"""
from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

STATUS_EVERY = 1.0      # seconds: `systemctl status` needs no more than one STATUS= a second


class Notifier:
    """sd_notify(3): one datagram per message to $NOTIFY_SOCKET; the watchdog from $WATCHDOG_USEC."""

    def __init__(self):
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock = None
        self.clock = time.monotonic
        usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
        mine = not pid or pid == str(os.getpid())
        # Seconds systemd waits for a ping, or None when no watchdog is asked for.
        self.watchdog = int(usec) / 1e6 if usec and usec.isdigit() and int(usec) > 0 and mine else None
        self.last_ping = 0.0
        self.status_text, self.status_at = "", 0.0

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

    def heartbeat(self, current, progress: float) -> None:
        """The ping, unless a job (``current``) has made no progress since ``progress`` (a
        ``time.monotonic()`` stamp) for a whole watchdog interval."""
        if self.watchdog is None:
            return
        self.ping(current is None or time.monotonic() - progress < self.watchdog)

    def report(self, current, progress: float) -> None:
        """Heartbeat and STATUS= (what is being described, or idle), the status only when it changes."""
        self.heartbeat(current, progress)
        now = self.clock()
        if now - self.status_at >= STATUS_EVERY:
            status = f"describing {current.path}" if current else "idle"
            if status != self.status_text:
                self.status_text, self.status_at = status, now
                self.send(f"STATUS={status}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
