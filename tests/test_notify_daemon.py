"""Notifications from the real daemon (a subprocess with the test-double runtime) to a real Mosquitto
broker and a local web server: messages and discovery, a broker restart, kill -9 with messages
pending, a failing webhook, a wrong password, a folder taken out of the watch list."""
import hashlib
import hmac
import json
import time

import pytest
from doubles import daemon, mosquitto
from doubles.webhooks import Receiver

from rkvideo import notify


@pytest.fixture
def broker(tmp_path):
    server = mosquitto.Broker(tmp_path / "broker").start()
    yield server
    server.stop()


FAST = {"retry_backoff": "0.1", "retry_max": "0.5", "timeout": "5", "flush_timeout": "20"}


def notify_config(tmp_path, mqtt: str = "", webhooks: str = "[]", notify: dict | None = None, **config):
    """The daemon tests' config plus a [notify] section with fast retries; ``notify``: more keys, as TOML."""
    path = daemon.write_config(tmp_path, **config)
    keys = {"mqtt": f'"{mqtt}"', "webhooks": webhooks, **FAST, **(notify or {})}
    with open(path, "a", encoding="utf-8") as f:
        f.write("[notify]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()))
    return path


def outbox(db) -> list:
    return daemon.query(db, "SELECT * FROM outbox ORDER BY id")


def test_a_described_recording_publishes_its_messages_and_discovery(tmp_path, broker):
    sub = mosquitto.Subscriber(broker, ("rkvideo/#",))
    folder = tmp_path / "Front Door"
    clip = daemon.clip(folder / "2024" / "visitor.mp4", 1)
    config = notify_config(tmp_path, broker.url(), notify={"base_url": '"http://nas:8765"'})
    db = tmp_path / "rkvideo.db"
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    assert f"notify: connected to mqtt://127.0.0.1:{broker.port}" in result.stderr

    message = sub.wait("rkvideo/events", 1)[0]
    description = daemon.query(db, "SELECT * FROM descriptions")[0]
    assert message["event_type"] == "description" and len(message["id"]) == 32
    assert (message["camera"], message["camera_id"], message["file"], message["path"]) == \
           ("Front Door", "front_door", "2024/visitor.mp4", str(clip))
    assert message["text"] == description["text"] and message["description_id"] == description["id"]
    assert message["title"] == notify.title(description["text"]) and message["title"].endswith(".")
    assert [f["seconds"] for f in message["frames"]] == [f["seconds"] for f in json.loads(description["frames"])]
    assert message["clip_url"] == f"http://nas:8765/recordings/{description['job_id']}#t=0"
    assert message["model"]["profile"] == "qwen2-vl-2b" and "describe" in message["timings"]
    assert sub.json("rkvideo/front_door/events") == [message] and sub.json("rkvideo/front_door/last") == [message]
    mosquitto.poll(lambda: sub.on("rkvideo/available") == [b"online", b"offline"], "online, then offline")
    assert outbox(db) == []

    # What Home Assistant finds when it (re)starts: the retained configs, the last caption, the state.
    kept = mosquitto.retained(broker, "#")
    configs = {t: json.loads(p) for t, p in kept.items() if t.startswith("homeassistant/")}
    assert set(configs) == {"homeassistant/binary_sensor/rkvideo/online/config",
                            "homeassistant/sensor/rkvideo/queue/config",
                            "homeassistant/sensor/rkvideo/front_door_caption/config",
                            "homeassistant/event/rkvideo/front_door_activity/config"}
    caption = configs["homeassistant/sensor/rkvideo/front_door_caption/config"]
    assert caption["state_topic"] == "rkvideo/front_door/last" and caption["device"]["name"] == "Front Door"
    assert json.loads(kept["rkvideo/front_door/last"])["id"] == message["id"]
    assert kept["rkvideo/available"] == b"offline" and kept["rkvideo/queue"] == b"0"
    sub.close()


def test_broker_down_while_describing_then_back_every_message_once_in_order(tmp_path, broker):
    """The subscriber keeps a session on the broker (as Home Assistant does), so what is published
    while it reconnects waits for it there; the daemon publishes nothing before the broker is back."""
    sub = mosquitto.Subscriber(broker, ("rkvideo/#",), client_id="test-listener", clean=False)
    folder = tmp_path / "door"
    folder.mkdir()
    config = notify_config(tmp_path, broker.url())
    db = tmp_path / "rkvideo.db"
    proc = daemon.start(folder, db, config)
    try:
        daemon.wait_for(lambda: sub.on("rkvideo/available") == [b"online"], proc, "the daemon to connect")
        broker.stop()
        paths = daemon.clips(folder, 4)
        daemon.wait_for(lambda: daemon.settled(db, paths), proc, "every clip described")
        pending = outbox(db)
        expected = [row["message"] for row in pending if row["topic"] == "rkvideo/events"]
        assert len(expected) == 4 and sub.on("rkvideo/events") == []
        order = {row["path"]: row["id"] for row in daemon.query(db, "SELECT path, id FROM descriptions")}
        daemon.wait_for(lambda: any(r["attempts"] for r in outbox(db)), proc, "a failed delivery to be noted")

        broker.start()
        daemon.wait_for(lambda: len(sub.on("rkvideo/events")) >= 4, proc, "the messages after the restart")
        daemon.wait_for(lambda: outbox(db) == [], proc, "an empty outbox")
    finally:
        code, err = daemon.stop(proc)
    assert code == 0, err
    got = sub.json("rkvideo/events")
    assert [m["id"] for m in got] == expected                     # each once, in the order described
    assert [m["description_id"] for m in got] == sorted(order.values())
    assert [m["id"] for m in sub.json("rkvideo/door/last")] == expected
    assert "trying again with back-off" in err and "works again after" in err
    sub.close()


def test_kill_9_with_messages_pending_they_are_sent_after_the_restart(tmp_path):
    broker = mosquitto.Broker(tmp_path / "broker")      # not started yet: the broker is down
    folder = tmp_path / "door"
    paths = daemon.clips(folder, 3)
    config = notify_config(tmp_path, broker.url())
    db = tmp_path / "rkvideo.db"
    proc = daemon.start(folder, db, config)
    daemon.wait_for(lambda: daemon.settled(db, paths), proc, "every clip described")
    daemon.kill(proc)
    expected = [row["message"] for row in outbox(db) if row["topic"] == "rkvideo/events"]
    assert len(expected) == 3

    listed = daemon.rkvideo("outbox", "--db", db)
    assert listed.returncode == 0 and f"mqtt://127.0.0.1:{broker.port}" in listed.stdout
    assert f"9 waiting for mqtt://127.0.0.1:{broker.port}" in listed.stderr    # 3 messages × 3 topics

    broker.start()
    try:
        sub = mosquitto.Subscriber(broker, ("rkvideo/#",))
        result = daemon.once(folder, db, config)          # nothing new to describe: only the outbox
        assert result.returncode == 0, result.stderr
        assert "9 outbox row(s) for mqtt://" in result.stderr
        assert outbox(db) == []                           # --once waited for the delivery
        assert [m["id"] for m in sub.json("rkvideo/events")] == expected
        sub.close()
    finally:
        broker.stop()


def test_once_gives_up_after_flush_timeout_and_keeps_the_messages(tmp_path):
    port = mosquitto.free_port()            # nothing listens there
    folder = tmp_path / "door"
    daemon.clips(folder, 1)
    config = notify_config(tmp_path, f"mqtt://127.0.0.1:{port}", notify={"flush_timeout": "0.5"})
    db = tmp_path / "rkvideo.db"
    result = daemon.once(folder, db, config)
    assert result.returncode == 0, result.stderr
    assert "not everything was delivered within notify.flush_timeout (0.5s)" in result.stderr
    assert "wait in the outbox for the next start" in result.stderr
    assert len(outbox(db)) == 3


def test_a_webhook_that_fails_twice_gets_the_message_signed(tmp_path):
    receiver = Receiver(fail_first=2)
    try:
        folder = tmp_path / "door"
        daemon.clips(folder, 1)
        config = notify_config(tmp_path, webhooks=f'[{{ url = "{receiver.url}", secret = "s3cret" }}]')
        db = tmp_path / "rkvideo.db"
        result = daemon.once(folder, db, config)
        assert result.returncode == 0, result.stderr
        assert [r["status"] for r in receiver.requests] == [500, 500, 204]
        assert "HTTP 500" in result.stderr and "works again after" in result.stderr
        ids = {r["headers"]["X-Rkvideo-Id"] for r in receiver.requests}
        assert len(ids) == 1                                        # one message, the same id each time
        (request,) = receiver.accepted()
        body, stamp = request["body"], request["headers"]["X-Rkvideo-Timestamp"]
        # The receiver's check, as the README describes it.
        expected = "sha256=" + hmac.new(b"s3cret", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert request["headers"]["X-Rkvideo-Signature"] == expected
        assert abs(time.time() - int(stamp)) < 300
        assert notify.verify("s3cret", stamp, body, request["headers"]["X-Rkvideo-Signature"])
        message = json.loads(body)
        assert message["id"] in ids and message["event_type"] == "description" and message["camera"] == "door"
        assert request["headers"]["Content-Type"] == "application/json"
        assert outbox(db) == []
    finally:
        receiver.close()


def test_failed_recordings_publish_errors(tmp_path, broker):
    sub = mosquitto.Subscriber(broker, ("rkvideo/errors",))
    folder = tmp_path / "door"
    daemon.clip(folder / "broken_cam.mp4", 1)
    (folder / "empty.mp4").write_bytes(b"")
    config = notify_config(tmp_path, broker.url(), max_attempts=1)
    db = tmp_path / "rkvideo.db"
    result = daemon.once(folder, db, config, env=daemon.environment(RKVIDEO_FAKE_FAIL="broken"))
    assert result.returncode == 0, result.stderr
    errors = {m["file"]: m for m in sub.wait("rkvideo/errors", 2)}
    assert set(errors) == {"broken_cam.mp4", "empty.mp4"}
    assert errors["empty.mp4"]["error"] == "empty file (0 bytes)"
    assert "fake failure for broken_cam.mp4" in errors["broken_cam.mp4"]["error"]
    assert {m["event_type"] for m in errors.values()} == {"error"}
    jobs = daemon.jobs(db)
    assert {m["job_id"] for m in errors.values()} == {jobs[str(folder / n)]["id"] for n in errors}
    sub.close()


def test_a_wrong_password_is_a_configuration_error_at_start(tmp_path):
    broker = mosquitto.Broker(tmp_path / "broker", users={"cam": "right-one"}).start()
    try:
        folder = tmp_path / "door"
        daemon.clips(folder, 1)
        db = tmp_path / "rkvideo.db"
        wrong = daemon.once(folder, db, notify_config(tmp_path, broker.url("cam", "wrong-one")))
        assert wrong.returncode == 2, wrong.stderr
        line = next(line for line in wrong.stderr.splitlines() if "refused the login" in line)
        assert "notify.mqtt" in line and f"mqtt://cam:***@127.0.0.1:{broker.port}" in line
        assert "wrong-one" not in wrong.stderr
        assert "loading the model" not in wrong.stderr            # stopped before the model loads
        assert daemon.query(db, "SELECT count(*) AS n FROM descriptions")[0]["n"] == 0

        sub = mosquitto.Subscriber(broker, ("rkvideo/events",), user="cam", password="right-one")
        right = daemon.once(folder, db, notify_config(tmp_path, broker.url("cam", "right-one")))
        assert right.returncode == 0, right.stderr
        assert len(sub.wait("rkvideo/events", 1)) == 1
        sub.close()
    finally:
        broker.stop()


def test_a_folder_no_longer_watched_loses_its_entities(tmp_path, broker):
    door, yard = tmp_path / "door", tmp_path / "yard"
    daemon.clips(door, 1)
    daemon.clips(yard, 1, first=1)
    config = notify_config(tmp_path, broker.url())
    db = tmp_path / "rkvideo.db"
    assert daemon.once([door, yard], db, config).returncode == 0
    before = {t for t in mosquitto.retained(broker, "homeassistant/#")}
    assert {"homeassistant/sensor/rkvideo/yard_caption/config",
            "homeassistant/event/rkvideo/yard_activity/config"} <= before

    result = daemon.once([door], db, config)
    assert result.returncode == 0, result.stderr
    after = set(mosquitto.retained(broker, "homeassistant/#"))
    assert after == before - {"homeassistant/sensor/rkvideo/yard_caption/config",
                              "homeassistant/event/rkvideo/yard_activity/config"}
    assert "removed 2 Home Assistant discovery config(s)" in result.stderr

    off = notify_config(tmp_path, broker.url(), notify={"discovery": "false"})
    assert daemon.once([door], db, off).returncode == 0
    assert set(mosquitto.retained(broker, "homeassistant/#")) == set()


def test_mqtts_with_the_brokers_ca(tmp_path):
    broker = mosquitto.Broker(tmp_path / "broker", tls=True).start()
    try:
        sub = mosquitto.Subscriber(broker, ("rkvideo/events",))
        folder = tmp_path / "door"
        daemon.clips(folder, 1)
        db = tmp_path / "rkvideo.db"
        # Without the CA the certificate cannot be checked: a warning, and the messages wait.
        unknown = daemon.once(folder, db, notify_config(tmp_path, broker.url(), notify={"flush_timeout": "0.5"}))
        assert unknown.returncode == 0, unknown.stderr
        assert "certificate verify failed" in unknown.stderr and len(outbox(db)) == 3
        trusted = daemon.once(folder, db, notify_config(tmp_path, broker.url(), notify={"mqtt_ca": f'"{broker.ca}"'}))
        assert trusted.returncode == 0, trusted.stderr
        assert len(sub.wait("rkvideo/events", 1)) == 1 and outbox(db) == []
        sub.close()
    finally:
        broker.stop()
