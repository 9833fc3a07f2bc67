"""Delivering the outbox: one thread per target, in order, with back-off, never in the way of describing.

Why this shape:

* The outbox rows are written with the descriptions (``messages``); here they
  are only read, sent and deleted. A row leaves the outbox only after its
  target took it (an MQTT PUBACK, a 2xx answer), so a broker that is down, a
  web server that fails, a kill -9 or a power cut loses nothing: what was not
  acknowledged is sent again, with the same message id (at least once).
* One thread and one store connection per target: a web server that hangs
  for ``notify.timeout`` delays neither the broker nor the worker, and a
  target's rows go out strictly in the order they were written (a row that
  fails holds back the rows behind it; they are newer).
* After a failure a target waits ``notify.retry_backoff`` seconds, doubling up
  to ``notify.retry_max``; one warning per outage and one line when it is over,
  not a line per try. The worker's ``wake()`` makes an idle thread look at
  once; otherwise it looks every ``POLL`` seconds (also for rows other
  processes wrote).
* Messages older than ``notify.max_age`` are dropped, each target's with a log
  line — at start and every ``EXPIRE_EVERY`` seconds.
* At start the broker's first connection is awaited (up to
  ``notify.timeout``): a refused login is a configuration error at once; a
  broker that is down is only a warning, and delivery starts when it is back.
  ``flush`` waits (``watch --once``) until every target has nothing left it
  can send, or the time is up.
"""
from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable

from .. import errors
from ..config import Config
from ..store import JobStore, Status
from . import discovery, webhook
from .mqtt import Link
from .targets import Broker, Webhook, targets
from .topics import Topics, cameras

log = logging.getLogger(__name__)

BATCH = 20              # rows per round (paho keeps 20 QoS 1 messages in flight)
POLL = 0.5              # seconds an idle target waits before it looks at the outbox again
EXPIRE_EVERY = 60.0     # seconds between drops of messages older than notify.max_age
QUEUE_EVERY = 2.0       # seconds between looks at the queue length (published when it changes)


def expire(store: JobStore, max_age: float) -> int:
    """Drop messages older than ``max_age`` seconds, with one log line per target; returns how many."""
    dropped = 0
    for gone in store.outbox_expire(max_age):
        ids = gone["messages"].split()
        shown = ", ".join(dict.fromkeys(ids[:5])) + (", …" if len(set(ids)) > 5 else "")
        log.warning("notify: dropped %d outbox row(s) for %s older than notify.max_age (%gs; the oldest from %s): "
                    "message ids %s", gone["n"], gone["target"], max_age, gone["oldest"], shown)
        dropped += gone["n"]
    return dropped


class Delivery(threading.Thread):
    """Sends one target's outbox rows in order; ``connect``/``send``/``idle`` are the target's own."""

    def __init__(self, target, config: Config, open_store: Callable[[], JobStore], stopping: threading.Event):
        super().__init__(name=f"rkvideo-notify-{target.kind}", daemon=True)
        self.target, self.settings, self.open_store, self.stopping = target, config.notify, open_store, stopping
        self.wake = threading.Event()
        self.started_up = threading.Event()     # the first connection was tried
        self.first_error: Exception | None = None
        self.drained_at = -math.inf             # monotonic start of the last look that found nothing to send
        self.problem: str | None = None         # the failure being reported, until it is over
        self.problem_since = 0.0
        self.expired_at = time.monotonic()

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        store = None
        try:
            store = self.open_store()
            self.deliver(store)
        except Exception:       # noqa: BLE001 - report, do not vanish; the rows wait for the next start
            log.exception("notify: %s: delivery stopped by an unexpected error", self.target.shown)
        finally:
            self.started_up.set()
            self.close()
            if store is not None:
                store.close()

    def deliver(self, store: JobStore) -> None:
        delay = self.settings.retry_backoff
        while not self.stopping.is_set():
            looked = time.monotonic()
            try:
                self.housekeeping(store, looked)
                self.connect(store)
                self.started_up.set()
                rows = store.outbox(self.target.key, limit=BATCH)
                if rows:
                    self.send(store, rows)
                else:
                    self.drained_at = looked
                    self.idle(store)
                    self.wake.clear()
                self.recovered()
                delay = self.settings.retry_backoff
            except (errors.RuntimeFailure, errors.UsageError) as exc:
                if not self.started_up.is_set():
                    self.first_error = exc
                    self.started_up.set()
                self.failed(store, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.settings.retry_max)

    def housekeeping(self, store: JobStore, now: float) -> None:
        if now - self.expired_at >= EXPIRE_EVERY:
            self.expired_at = now
            expire(store, self.settings.max_age)

    def failed(self, store: JobStore, exc: Exception, delay: float) -> None:
        """Note the failure on the head row (``rkvideo outbox`` shows it); warn once per outage."""
        waiting = 0
        try:
            head = store.outbox(self.target.key, limit=1)
            if head:
                store.outbox_failed(head[0]["id"], str(exc), delay)
            waiting = store.outbox_counts().get(self.target.key, {}).get("n", 0)
        except errors.RuntimeFailure as store_exc:     # the database itself: said below, tried again later
            log.debug("notify: cannot note the failure in the outbox: %s", store_exc)
        if str(exc) != self.problem:
            if self.problem is None:
                self.problem_since = time.monotonic()
            self.problem = str(exc)
            level = logging.ERROR if isinstance(exc, errors.UsageError) else logging.WARNING
            log.log(level, "notify: %s (%d outbox row(s) wait; trying again with back-off up to %gs)", exc,
                    waiting, self.settings.retry_max)

    def recovered(self) -> None:
        if self.problem is not None:
            log.info("notify: %s works again after %.0fs", self.target.shown, time.monotonic() - self.problem_since)
            self.problem = None

    # ------------------------------------------------------------ per kind of target

    def connect(self, store: JobStore) -> None:
        """Be ready to send (a no-op for a webhook)."""

    def send(self, store: JobStore, rows: list[dict]) -> None:
        raise NotImplementedError

    def idle(self, store: JobStore) -> None:
        self.wake.wait(POLL)

    def close(self) -> None:
        """Leave cleanly (the broker: ``offline``, then disconnect)."""


class WebhookDelivery(Delivery):
    target: Webhook

    def send(self, store: JobStore, rows: list[dict]) -> None:
        """POST the rows one by one, in order; those the server took leave the outbox together (one
        transaction per round, also when a later one fails)."""
        taken = []
        try:
            for row in rows:
                if self.stopping.is_set():
                    return
                webhook.post(self.target, row["message"], row["payload"], self.settings.timeout)
                taken.append(row["id"])
        finally:
            store.outbox_sent(taken)


class MqttDelivery(Delivery):
    """The broker: after each connection, ``online``, the discovery configs and the queue length, then the
    outbox rows."""

    target: Broker

    def __init__(self, target: Broker, config: Config, open_store, stopping, folders):
        super().__init__(target, config, open_store, stopping)
        self.topics = Topics(self.settings.topic_prefix)
        self.cameras = cameras(folders)
        self.link: Link | None = None
        self.queue: int | None = None           # the length last published
        self.queue_at = 0.0
        host = socket.gethostname()
        self.client_id = f"rkvideo-{self.topics.node}-{host}"[:64]

    def connect(self, store: JobStore) -> None:
        if self.link is not None and not self.link.lost:
            return
        self.link = None
        link = Link(self.target, will_topic=self.topics.available, timeout=self.settings.timeout,
                    client_id=self.client_id)
        link.open()
        self.link = link
        log.info("notify: connected to %s", self.target.shown)
        self.publish_all([(self.topics.available, "online", True)])
        self.announce(store)
        self.queue = None
        self.publish_queue(store)

    def announce(self, store: JobStore) -> None:
        """Discovery configs for the folders watched now; empty ones for those announced before and gone."""
        current = (discovery.configs(self.topics, self.cameras, self.settings.discovery_prefix)
                   if self.settings.discovery else {})
        gone = sorted(store.announced(self.target.key) - set(current))
        self.publish_all([(topic, "", True) for topic in gone] + [(t, p, True) for t, p in current.items()])
        store.announce(self.target.key, set(current))
        if gone:
            log.info("notify: removed %d Home Assistant discovery config(s) no longer wanted: %s", len(gone),
                     ", ".join(gone))

    def publish_all(self, items: list) -> None:
        for start in range(0, len(items), BATCH):
            chunk = items[start:start + BATCH]
            if self.link.publish(chunk) < len(chunk):
                self.link.step()        # the connection is gone: raises Unreachable

    def publish_queue(self, store: JobStore) -> None:
        """Recordings queued or running, retained, when the number changed."""
        now = time.monotonic()
        if self.queue is not None and now - self.queue_at < QUEUE_EVERY:
            return
        self.queue_at = now
        counts = store.counts()
        queue = counts.get(Status.QUEUED, 0) + counts.get(Status.RUNNING, 0)
        if queue != self.queue:
            self.publish_all([(self.topics.queue, str(queue), True)])
            self.queue = queue

    def send(self, store: JobStore, rows: list[dict]) -> None:
        sent = self.link.publish([(row["topic"], row["payload"], row["retain"]) for row in rows])
        store.outbox_sent([row["id"] for row in rows[:sent]])
        if sent < len(rows):
            self.link.step()            # the connection is gone: raises Unreachable
        self.publish_queue(store)

    def idle(self, store: JobStore) -> None:
        self.publish_queue(store)
        self.link.pump(POLL, self.wake.is_set)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


class Sender:
    """Every configured target's delivery thread; ``start`` them, ``wake`` them, ``flush`` and ``stop``."""

    def __init__(self, config: Config, folders, open_store: Callable[[], JobStore]):
        self.settings = config.notify
        self.targets = targets(config)
        self.stopping = threading.Event()
        self.deliveries: list[Delivery] = []
        for target in self.targets:
            if isinstance(target, Broker):
                self.deliveries.append(MqttDelivery(target, config, open_store, self.stopping, folders))
            else:
                self.deliveries.append(WebhookDelivery(target, config, open_store, self.stopping))

    def start(self, store: JobStore) -> None:
        """Drop expired messages, say what waits, start the threads. A broker that refuses the login
        (``Refused``), or MQTT without paho-mqtt, raises its usage error after the threads are stopped
        again; a broker that cannot be reached is only logged (by its thread) and tried again."""
        expire(store, self.settings.max_age)
        self.report(store, "wait in the outbox")
        for delivery in self.deliveries:
            delivery.start()
        for delivery in self.deliveries:
            if isinstance(delivery, MqttDelivery):
                delivery.started_up.wait(self.settings.timeout + 1)
                if isinstance(delivery.first_error, errors.UsageError):
                    self.stop(store, quiet=True)
                    raise delivery.first_error

    def report(self, store: JobStore, what: str) -> None:
        """One line per target with rows in the outbox; rows of targets no longer configured are named."""
        keys = {t.key for t in self.targets}
        for key, waiting in store.outbox_counts().items():
            if key in keys:
                log.info("notify: %d outbox row(s) for %s %s (the oldest from %s)", waiting["n"], key, what,
                         waiting["oldest"])
            else:
                log.warning("notify: %d outbox row(s) for %s, which is no longer configured, wait until "
                            "notify.max_age (%gs) drops them", waiting["n"], key, self.settings.max_age)

    def wake(self) -> None:
        """New rows were committed: idle targets look now."""
        for delivery in self.deliveries:
            delivery.wake.set()

    def flush(self, timeout: float, stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait until every target looked at the outbox after this call and found nothing to send, or
        ``timeout`` seconds passed, or ``stop()``; True when everything went."""
        asked = time.monotonic()
        self.wake()
        end = asked + timeout
        while time.monotonic() < end and not stop():
            if all(d.drained_at >= asked or not d.is_alive() for d in self.deliveries):
                return True
            self.stopping.wait(0.05)
        return False

    def stop(self, store: JobStore, *, quiet: bool = False) -> None:
        """Stop every thread (the broker is told ``offline``); say what still waits for the next start."""
        self.stopping.set()
        self.wake()
        for delivery in self.deliveries:
            if delivery.is_alive():
                delivery.join(self.settings.timeout + 2)
        if not quiet and self.deliveries:
            self.report(store, "wait in the outbox for the next start")
