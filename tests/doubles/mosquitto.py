"""A real Mosquitto broker for the notification tests, and a paho subscriber that records what arrives.

The broker runs from the system package (/usr/sbin/mosquitto) on a free port of 127.0.0.1 with its
config, password file and persistence in a temporary folder; ``stop``/``start`` restart it on the
same port with the same persistent state (retained messages and the sessions of subscribers that
connected with ``clean_session=False``), as a real broker restart does. Waiting is always polling
for a condition with a deadline.
"""
from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
DEADLINE = 30.0


def binary() -> str:
    """The broker's path; skips the test (with the fix) only when it is not installed."""
    found = MOSQUITTO if Path(MOSQUITTO).exists() else shutil.which("mosquitto")
    if not found:
        pytest.skip("mosquitto is not installed (sh scripts/system-packages.sh, or apt-get install mosquitto)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poll(condition, what: str, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it (openssl): (ca, cert, key)."""
    tool = shutil.which("openssl")
    if tool is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, request = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for command in ([tool, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test CA"],
                    [tool, "req", *ec, "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
                    [tool, "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                     "-out", cert, "-days", "2", "-extfile", folder / "san.ext"]):
        subprocess.run(list(map(str, command)), check=True, capture_output=True)
    return ca, cert, key


class Broker:
    """``users``: name → password; with it anonymous clients are refused. ``tls``: the listener speaks
    TLS only, with a certificate from ``ca`` (a test CA made here)."""

    def __init__(self, folder: Path, users: dict | None = None, tls: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.users = users
        self.ca: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.config = self.folder / "mosquitto.conf"
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.folder}/", f"log_dest file {self.folder}/mosquitto.log",
                 "log_type all"]
        if users:
            passwords = self.folder / "passwords"
            tool = shutil.which("mosquitto_passwd") or str(Path(binary()).parent.parent / "bin/mosquitto_passwd")
            for n, (name, password) in enumerate(users.items()):
                create = ["-c"] if n == 0 else []
                subprocess.run([tool, *create, "-b", str(passwords), name, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            self.ca, cert, key = certificates(self.folder)
            lines += [f"cafile {self.ca}", f"certfile {cert}", f"keyfile {key}"]
        self.config.write_text("\n".join(lines) + "\n")

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"{'mqtts' if self.ca else 'mqtt'}://{auth}127.0.0.1:{self.port}"

    def start(self) -> Broker:
        self.proc = subprocess.Popen([binary(), "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        poll(self.accepting, "mosquitto to listen")
        return self

    def accepting(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited ({self.proc.returncode}): {self.proc.stderr.read()}\n"
                                 f"{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistent state and closes every connection."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=DEADLINE)
        self.proc = None

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Subscriber:
    """A paho client that records every message on ``topics`` (QoS 1), in arrival order.

    ``client_id`` with ``clean=False`` keeps its session on the broker: messages published while
    it is disconnected (or while the broker restarts) are delivered when it is back.
    """

    def __init__(self, broker: Broker, topics=("#",), *, client_id: str = "", clean: bool = True,
                 user: str | None = None, password: str | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topics = topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean,
                                  protocol=mqtt.MQTTv311)
        if user:
            self.client.username_pw_set(user, password)
        if broker.ca:
            self.client.tls_set(ca_certs=str(broker.ca))
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self.on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        poll(self.subscribed.is_set, "the test subscriber to subscribe")

    def on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if not reason_code.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic``, in order."""
        with self.lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def json(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic) if p]

    def wait(self, topic: str, count: int, timeout: float = DEADLINE) -> list[dict]:
        """The first ``count`` JSON messages on ``topic`` once they are there."""
        poll(lambda: len(self.on(topic)) >= count, f"{count} message(s) on {topic}", timeout)
        return self.json(topic)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained(broker: Broker, pattern: str, **auth) -> dict[str, bytes]:
    """The retained messages on ``pattern`` now, as a new subscriber gets them.

    The broker queues the retained messages for a subscriber when it takes the subscription, so once
    a message published after the SUBACK comes back on a sentinel topic, every retained one is here.
    """
    sentinel = f"test/sentinel/{time.monotonic_ns()}"
    sub = Subscriber(broker, (pattern, sentinel), **auth)
    try:
        sub.client.publish(sentinel, b"x", qos=1)
        poll(lambda: sub.on(sentinel), "the sentinel message")
        with sub.lock:
            return {t: p for t, p, r in sub.messages if r}
    finally:
        sub.close()
