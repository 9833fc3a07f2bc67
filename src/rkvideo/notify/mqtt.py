"""One connection to the MQTT broker, driven by the thread that delivers to it.

Why paho's ``loop()`` is called here instead of its background thread: the
sender must know, for every message, whether the broker acknowledged it
(QoS 1 PUBACK) before it deletes the outbox row, and it must decide itself
when to reconnect (with its back-off) rather than have paho reconnect and
resend behind its back. So the delivering thread owns the client, and
everything — connecting, publishing, waiting for acknowledgements, keepalive
pings while idle — runs in that thread through ``loop()``. A lost connection
is an ``Unreachable`` error; the thread opens a new ``Link`` after its
back-off.

The last will is ``offline`` (retained) on ``<prefix>/available``; ``open``
publishes ``online``, ``close`` publishes ``offline`` before it disconnects.
A broker that refuses the login (bad user name or password, not authorized)
raises ``Refused``, a usage error: at start-up it stops the daemon with one
line naming ``notify.mqtt``.
"""
from __future__ import annotations

import ssl
import time
from collections.abc import Callable

from ..errors import RuntimeFailure, UsageError
from .targets import Broker

KEEPALIVE = 30          # seconds between pings the broker expects
STEP = 0.1              # seconds per loop() call
# CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and their MQTT 5 reason codes (134, 135).
LOGIN_REFUSED = {4, 5, 134, 135}


class Unreachable(RuntimeFailure):
    """The broker cannot be reached, did not answer, or the connection was lost: try again later."""


class Refused(UsageError):
    """The broker refused the login: the credentials in notify.mqtt are wrong."""


def paho():
    """paho-mqtt, or a usage error saying how to install it."""
    try:
        import paho.mqtt.client as client
    except ImportError:
        raise UsageError("notify.mqtt is set but paho-mqtt is not installed: pip install 'rkvideo[notify]'") from None
    return client


class Link:
    """A connected client; ``publish`` returns once the broker acknowledged (or the time is up)."""

    def __init__(self, broker: Broker, *, will_topic: str, timeout: float, client_id: str):
        self.broker, self.will_topic, self.timeout, self.client_id = broker, will_topic, timeout, client_id
        self.client = None
        self.answer = None          # the CONNACK reason code
        self.lost = False

    # ------------------------------------------------------------ connecting

    def open(self) -> None:
        mqtt = paho()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                             clean_session=True)
        client.connect_timeout = self.timeout
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            try:
                client.tls_set(ca_certs=self.broker.ca)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"notify.mqtt_ca {self.broker.ca}: cannot use the CA file: {exc}") from None
        client.will_set(self.will_topic, "offline", qos=1, retain=True)
        try:
            rc = client.connect(self.broker.host, self.broker.port, keepalive=KEEPALIVE)
        except (OSError, ssl.SSLError) as exc:
            hint = " (is notify.mqtt_ca the CA that signed the broker's certificate?)" \
                if isinstance(exc, ssl.SSLCertVerificationError) else ""
            raise Unreachable(f"{self.broker.shown}: cannot connect: {_reason(exc)}{hint}") from None
        if rc != 0:
            raise Unreachable(f"{self.broker.shown}: cannot connect: {mqtt.error_string(rc)}")
        self.client = client
        try:
            self.wait(lambda: self.answer is not None, "the broker did not answer the connection")
        except Unreachable:
            if self.answer is None:     # a refusal can close the connection in the same step as its CONNACK
                raise
        if self.answer.is_failure:
            code, name = self.answer.value, self.answer.getName()
            self.close_socket()
            if code in LOGIN_REFUSED:
                raise Refused(f"notify.mqtt {self.broker.shown}: the broker refused the login: {name} "
                              f"(fix the user name and password in notify.mqtt)")
            raise Unreachable(f"{self.broker.shown}: the broker refused the connection: {name}")

    def on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.answer = reason_code

    def on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self.lost = True

    # ------------------------------------------------------------ traffic

    def publish(self, items: list[tuple[str, str, bool]]) -> int:
        """Publish (topic, payload, retain) items in order with QoS 1; returns how many, from the first,
        the broker acknowledged. Raises ``Unreachable`` when none could be (the connection is gone)."""
        infos = []
        for topic, payload, retain in items:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != 0:            # not sent (the connection is gone): only those before it can arrive
                break
            infos.append(info)
        try:
            self.wait(lambda: all(_published(info) for info in infos), "the broker did not acknowledge")
        except Unreachable:
            done = next((n for n, info in enumerate(infos) if not _published(info)), len(infos))
            if done == 0:
                raise
            return done
        if len(infos) < len(items):
            self.close_socket()
            if not infos:
                raise Unreachable(f"{self.broker.shown}: connection lost")
        return len(infos)

    def pump(self, seconds: float, wake: Callable[[], bool]) -> None:
        """Keep the connection alive for up to ``seconds``, or until ``wake()``; raises ``Unreachable``
        when it is lost."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not wake():
            self.step()

    def step(self) -> None:
        rc = self.client.loop(STEP) if self.client is not None else None
        if rc != 0 or self.lost:
            self.close_socket()
            detail = f" ({paho().error_string(rc)})" if rc else ""
            raise Unreachable(f"{self.broker.shown}: connection lost{detail}")

    def wait(self, condition: Callable[[], bool], failure: str) -> None:
        end = time.monotonic() + self.timeout
        while not condition():
            if time.monotonic() > end:
                self.close_socket()
                raise Unreachable(f"{self.broker.shown}: {failure} within {self.timeout:g}s")
            self.step()

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """``offline`` on the availability topic, then a clean disconnect (no last will)."""
        if self.client is not None and not self.lost:
            try:
                self.publish([(self.will_topic, "offline", True)])
                self.client.disconnect()
                self.client.loop(STEP)
            except (Unreachable, OSError):
                pass
        self.close_socket()

    def close_socket(self) -> None:
        """Drop the connection without a word (the broker sends the last will); the link is done."""
        self.lost = True
        if self.client is not None:
            sock = self.client.socket()
            if sock is not None:
                sock.close()
            self.client = None


def _published(info) -> bool:
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
