"""Notifications without the daemon: the [notify] settings, the messages and their outbox rows, the
outbox in the store (same transaction as the description), signatures, expiry — and the sender
against a real Mosquitto broker for a result with timeline events."""
import hashlib
import hmac
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from doubles import mosquitto

from rkvideo import config, errors, notify, pipeline, store
from rkvideo.notify import discovery
from rkvideo.store import Status

FOLDER = Path("/srv/cameras/Front Door")


def settings(tmp_path, text: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return config.read(path)


def a_result(text="A man in a red coat carries a parcel to the door. He rings twice.", events=()):
    frames = [{"index": i, "pts": i * 100, "seconds": 2.0 * i, "source": "x"} for i in range(3)]
    return pipeline.Result(inputs=[str(FOLDER / "a.mp4")], kind=pipeline.Kind.VIDEO, frames=frames,
                           prompt="Describe.", model={"profile": "qwen2-vl-2b", "vision": "v.rknn", "llm": "l.rkllm"},
                           tokens=pipeline.Tokens(300, 198, 12), frames_capped_by_budget=False,
                           timings=pipeline.Timings(generate=1.5), text=text, events=list(events))


@pytest.fixture
def db(tmp_path):
    s = store.open_store(tmp_path / "rkvideo.db")
    yield s
    s.close()


def queued_job(db, path=FOLDER / "2024/0800.mp4", mtime=1_700_000_000.0, duration=6.0):
    db.put(str(path), Status.QUEUED, root=str(FOLDER), size=10, mtime=mtime, digest="h", duration=duration)
    return db.claim("test")


# ------------------------------------------------------------------ settings

@pytest.mark.parametrize("text, fragment", [
    ('mqtt = "http://broker"', "notify.mqtt must look like mqtt://host:1883"),
    ('mqtt = "mqtt://user:hunter2@broker:99999"', "mqtt://user:***@broker:99999"),
    ('webhooks = ["https://x"]', "notify.webhooks[0] must be a table"),
    ('webhooks = [{ secret = "s" }]', "notify.webhooks[0].url must be set"),
    ('webhooks = [{ url = "https://x", token = "s" }]', "unknown key token"),
    ('topic_prefix = "cams/#"', "notify.topic_prefix must be a topic without wildcards"),
    ('discovery_prefix = "/homeassistant"', "leading or trailing /"),
    ('clip_path = "/r/{path}"', "notify.clip_path: unknown field {path}"),
    ('thumbnail_path = "/t/{frame.__class__}"', "unknown field {frame.__class__}"),
    ('retry_backoff = 0', "notify.retry_backoff must be above 0"),
    ('base_url = "nas:8765"', "notify.base_url must look like http://host"),
])
def test_bad_notify_settings_name_the_key_and_never_show_a_password(tmp_path, text, fragment):
    with pytest.raises(config.ConfigError) as caught:
        settings(tmp_path, f"[notify]\n{text}\n")
    assert fragment in str(caught.value) and str(tmp_path / "config.toml") in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_targets_have_keys_without_passwords(tmp_path):
    cfg = settings(tmp_path, '[notify]\nmqtt = "mqtts://cam%40home:p%3Ass@broker.lan"\nmqtt_ca = "ca.pem"\n'
                             'webhooks = [{ url = "https://a/hook", secret = "s" }, { url = "https://a/hook" }, '
                             '{ url = "http://b/x" }]\n')
    broker, first, second = notify.targets(cfg)
    assert (broker.key, broker.port, broker.tls, broker.username, broker.password) == \
           ("mqtts://broker.lan:8883", 8883, True, "cam@home", "p:ss")
    assert broker.ca == str(tmp_path / "ca.pem") and "p:ss" not in broker.shown
    assert (first.key, first.secret, second.key, second.secret) == ("https://a/hook", "s", "http://b/x", "")


# ------------------------------------------------------------------ messages

@pytest.mark.parametrize("text, expected", [
    ("A car parks. Then it leaves.", "A car parks."),
    ("What is that? A fox.", "What is that?"),
    ("Version 1.5 of the gate opens\nsecond line.", "Version 1.5 of the gate opens"),
    ("  no   full stop at all  ", "no full stop at all"),
    ("", ""),
    (None, ""),
])
def test_title_is_the_first_sentence(text, expected):
    assert notify.title(text) == expected


def test_a_long_title_is_cut_at_a_word_to_255_characters():
    long = " ".join(["word"] * 100) + "."
    cut = notify.title(long)
    assert len(cut) <= 255 and cut.endswith("word…") and cut.startswith("word word")


def test_message_fields_for_a_description(tmp_path, db):
    cfg = settings(tmp_path, '[notify]\nmqtt = "mqtt://broker"\nwebhooks = [{ url = "http://hook/x" }]\n'
                             'base_url = "http://nas:8765/"\n')
    notices = notify.Notices(cfg, [FOLDER])
    job = queued_job(db)
    rows = notices.described(job, a_result(), {"describe": 2.0})(41)
    by_target = {}
    for row in rows:
        by_target.setdefault(row.target, []).append(row)
    mqtt, hook = by_target["mqtt://broker:1883"], by_target["http://hook/x"]
    assert [(r.topic, r.retain) for r in mqtt] == [("rkvideo/events", False), ("rkvideo/front_door/events", False),
                                                   ("rkvideo/front_door/last", True)]
    assert [r.topic for r in hook] == [None]
    assert len({r.message for r in rows}) == 1 and len({r.payload for r in rows}) == 1
    message = json.loads(hook[0].payload)
    assert message["id"] == hook[0].message and message["event_type"] == "description"
    assert (message["camera"], message["camera_id"], message["folder"]) == ("Front Door", "front_door", str(FOLDER))
    assert (message["file"], message["path"]) == ("2024/0800.mp4", str(FOLDER / "2024/0800.mp4"))
    assert (message["job_id"], message["description_id"]) == (job.id, 41)
    assert message["title"] == "A man in a red coat carries a parcel to the door."
    assert message["text"] == message["summary"] == a_result().text
    # The file was last written at 1 700 000 000 (its end); it lasts 6 s.
    assert (message["start"], message["end"]) == ("2023-11-14T22:13:14.000+00:00", "2023-11-14T22:13:20.000+00:00")
    assert (message["start_seconds"], message["end_seconds"]) == (0.0, 6.0)
    assert [(f["seconds"], f["time"][11:23]) for f in message["frames"]] == \
           [(0.0, "22:13:14.000"), (2.0, "22:13:16.000"), (4.0, "22:13:18.000")]
    assert message["frames"][1]["url"] == "http://nas:8765/thumbnails/41/1.jpg"
    assert message["thumbnail_url"] == "http://nas:8765/thumbnails/41/0.jpg"
    assert message["clip_url"] == f"http://nas:8765/recordings/{job.id}#t=0"
    assert message["model"]["profile"] == "qwen2-vl-2b" and message["timings"] == {"generate": 1.5, "describe": 2.0}
    assert message["tokens"] == {"prompt": 300, "vision": 198, "new": 12}


def test_no_urls_without_base_url_and_no_rows_without_targets(tmp_path, db):
    job = queued_job(db)
    cfg = settings(tmp_path, '[notify]\nwebhooks = [{ url = "http://hook/x" }]\n')
    message = json.loads(notify.Notices(cfg, [FOLDER]).described(job, a_result())(1)[0].payload)
    assert "clip_url" not in message and "thumbnail_url" not in message and "url" not in message["frames"][0]
    none = notify.Notices(config.Config(), [FOLDER])
    assert not none and none.described(job, a_result())(1) == [] and none.failed(job, "x")(job.id) == []


def test_events_follow_their_description_with_their_own_times(tmp_path, db):
    cfg = settings(tmp_path, '[notify]\nmqtt = "mqtt://broker"\nbase_url = "http://nas"\n'
                             'clip_path = "/r/{job_id}?from={start_seconds}&to={end_seconds}"\n')
    events = [pipeline.Event(1.5, 3.25, "A fox crosses the lawn. It stops.", [{"index": 9, "seconds": 2.0}], 0.8),
              pipeline.Event(4.0, 5.0, "The fox leaves.", [], 0.5)]
    job = queued_job(db)
    rows = notify.Notices(cfg, [FOLDER]).described(job, a_result(events=events))(7)
    messages = [json.loads(r.payload) for r in rows if r.topic == "rkvideo/events"]
    assert [m["event_type"] for m in messages] == ["description", "event", "event"]
    first = messages[1]
    assert (first["title"], first["summary"], first["event_index"], first["score"]) == \
           ("A fox crosses the lawn.", a_result().text, 0, 0.8)
    assert (first["start_seconds"], first["end_seconds"], first["start"][11:23]) == (1.5, 3.25, "22:13:15.500")
    assert first["clip_url"] == f"http://nas/r/{job.id}?from=1.5&to=3.25"
    assert [r.topic for r in rows if json.loads(r.payload)["event_type"] == "event"] == \
           ["rkvideo/events", "rkvideo/front_door/events"] * 2      # only descriptions are "last"
    assert messages[2]["thumbnail_url"] is None


def test_two_folders_that_would_be_one_camera_are_refused(tmp_path):
    cfg = settings(tmp_path, '[notify]\nmqtt = "mqtt://broker"\n')
    with pytest.raises(errors.UsageError, match="both would be camera 'door'"):
        notify.Notices(cfg, [Path("/a/Door"), Path("/b/door")])
    notify.Notices(config.Config(), [Path("/a/Door"), Path("/b/door")])      # no target: no cameras


def test_discovery_configs_per_daemon_and_folder():
    topics = notify.Topics("rkvideo")
    configs = {t: json.loads(p) for t, p in discovery.configs(topics, {"door": Path("/x/Door")}, "ha").items()}
    assert set(configs) == {"ha/binary_sensor/rkvideo/online/config", "ha/sensor/rkvideo/queue/config",
                            "ha/sensor/rkvideo/door_caption/config", "ha/event/rkvideo/door_activity/config"}
    caption = configs["ha/sensor/rkvideo/door_caption/config"]
    assert caption["state_topic"] == caption["json_attributes_topic"] == "rkvideo/door/last"
    assert caption["value_template"] == "{{ value_json.title }}" and caption["unique_id"] == "rkvideo_door_caption"
    assert caption["device"]["via_device"] == "rkvideo" and caption["device"]["name"] == "Door"
    event = configs["ha/event/rkvideo/door_activity/config"]
    assert event["event_types"] == ["description", "event"] and event["state_topic"] == "rkvideo/door/events"
    online = configs["ha/binary_sensor/rkvideo/online/config"]
    assert (online["state_topic"], online["payload_on"], online["payload_off"]) == \
           ("rkvideo/available", "online", "offline")
    other = discovery.configs(notify.Topics("garage/rkvideo"), {}, "ha")
    assert "ha/sensor/garage_rkvideo/queue/config" in other
    assert json.loads(other["ha/sensor/garage_rkvideo/queue/config"])["unique_id"] == "rkvideo_garage_rkvideo_queue"


# ------------------------------------------------------------------ the outbox in the store

def outbox_rows(db):
    conn = sqlite3.connect(db.location)
    try:
        return conn.execute("SELECT message, target, topic FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()


def test_messages_are_committed_with_the_description_or_not_at_all(tmp_path, db):
    cfg = settings(tmp_path, '[notify]\nmqtt = "mqtt://broker"\n')
    notices = notify.Notices(cfg, [FOLDER])
    job = queued_job(db)

    def crash():
        raise RuntimeError("power cut inside the commit")

    with pytest.raises(RuntimeError):
        db.finish(job, a_result(), before_commit=crash, messages=notices.described(job, a_result()))
    assert outbox_rows(db) == [] and db.descriptions(job.id) == []
    description = db.finish(job, a_result(), messages=notices.described(job, a_result()))
    rows = db.outbox()
    assert len(rows) == 3 and {r["job_id"] for r in rows} == {job.id}
    assert json.loads(rows[0]["payload"])["description_id"] == description
    assert [r["retain"] for r in rows] == [False, False, True]
    assert db.outbox_counts() == {"mqtt://broker:1883": {"n": 3, "oldest": rows[0]["created_at"],
                                                         "last_error": None}}


def test_failures_put_an_error_message_in_the_outbox(tmp_path, db):
    cfg = settings(tmp_path, '[notify]\nwebhooks = [{ url = "http://hook/x" }]\n')
    notices = notify.Notices(cfg, [FOLDER])
    job = queued_job(db)
    db.fail(job.id, "RuntimeFailure: the NPU timed out", retry_in=10)        # a retry: no message
    assert db.outbox() == []
    db.fail(job.id, "RuntimeFailure: the NPU timed out", messages=notices.failed(job, "the NPU timed out"))
    bad = str(FOLDER / "empty.mp4")
    job_id = db.put(bad, Status.FAILED, root=str(FOLDER), error="empty file (0 bytes)",
                    messages=notices.failed(store.Job(id=0, path=bad, root=str(FOLDER)), "empty file (0 bytes)"))
    first, second = (json.loads(r["payload"]) for r in db.outbox())
    assert (first["event_type"], first["job_id"], first["file"], first["error"]) == \
           ("error", job.id, "2024/0800.mp4", "the NPU timed out")
    assert first["title"] == "2024/0800.mp4: the NPU timed out" and first["attempts"] == 1
    assert (second["job_id"], second["file"], second["title"]) == \
           (job_id, "empty.mp4", "empty.mp4: empty file (0 bytes)")


def test_a_job_that_crashed_every_attempt_fails_with_a_message(tmp_path, db):
    cfg = settings(tmp_path, '[notify]\nwebhooks = [{ url = "http://hook/x" }]\n')
    notices = notify.Notices(cfg, [FOLDER])
    job = queued_job(db)
    # A new process has a worker id of its own: the one that claimed the job ("test") is gone.
    requeued, failed = db.recover("test-after-a-restart", 1, messages=notices.recovered)
    assert [j.id for j in failed] == [job.id] and failed[0].status == Status.RUNNING     # as it was found
    message = json.loads(db.outbox()[0]["payload"])
    assert message["event_type"] == "error" and "stopped during each of 1 attempts" in message["error"]


def test_outbox_rows_leave_in_order_and_failures_are_noted(db):
    rows = [store.Outgoing(target=t, message=f"m{n}", payload="{}") for n, t in enumerate("abab")]
    job = queued_job(db)
    db.finish(job, a_result(), messages=lambda _: rows)
    assert [r["message"] for r in db.outbox("a")] == ["m0", "m2"]
    head = db.outbox("b", limit=1)[0]
    db.outbox_failed(head["id"], "HTTP 500", 4.0)
    again = db.outbox("b")[0]
    assert (again["attempts"], again["last_error"]) == (1, "HTTP 500") and again["next_try"] > again["created_at"]
    db.outbox_sent([r["id"] for r in db.outbox("a")])
    assert [r["message"] for r in db.outbox()] == ["m1", "m3"]


def test_messages_older_than_max_age_are_dropped_with_a_log_line(db, caplog):
    job = queued_job(db)
    db.finish(job, a_result(), messages=lambda _: [store.Outgoing(target="http://hook/x", message="old", payload="{}")])
    assert notify.expire(db, 3600) == 0 and len(db.outbox()) == 1      # younger than an hour: kept
    with caplog.at_level(logging.WARNING, logger="rkvideo"):
        assert notify.expire(db, 0) == 1
    assert db.outbox() == []
    assert "dropped 1 outbox row(s) for http://hook/x older than notify.max_age" in caplog.text
    assert "message ids old" in caplog.text


def test_the_outbox_command_shows_what_waits(tmp_path, db):
    from click.testing import CliRunner

    from rkvideo import cli
    job = queued_job(db)
    db.finish(job, a_result(), messages=lambda _: [store.Outgoing(target="http://hook/x", message="abc123",
                                                                  payload='{"title": "hi"}')])
    db.outbox_failed(db.outbox()[0]["id"], "HTTP 503 Service Unavailable", 2)
    result = CliRunner().invoke(cli.rkvideo, ["outbox", "--db", db.location])
    assert result.exit_code == 0
    assert "http://hook/x" in result.stdout and "abc123" in result.stdout and "HTTP 503" in result.stdout
    assert "1 waiting for http://hook/x since" in result.stderr
    as_json = json.loads(CliRunner().invoke(cli.rkvideo, ["outbox", "--db", db.location, "--json"]).stdout)
    assert [json.loads(r["payload"])["title"] for r in as_json] == ["hi"]
    db.outbox_sent([as_json[0]["id"]])
    empty = CliRunner().invoke(cli.rkvideo, ["outbox", "--db", db.location])
    assert empty.stdout == "" and "outbox empty" in empty.stderr


# ------------------------------------------------------------------ signatures

def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"id": "x"}'
    expected = "sha256=" + hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert notify.sign("s3cret", "1700000000", body) == expected
    assert notify.verify("s3cret", "1700000000", body, expected, now=1_700_000_100)
    assert not notify.verify("s3cret", "1700000000", body + b" ", expected, now=1_700_000_100)     # body changed
    assert not notify.verify("other", "1700000000", body, expected, now=1_700_000_100)             # wrong secret
    assert not notify.verify("s3cret", "1700000000", body, expected, now=1_700_001_000)            # too old
    assert not notify.verify("s3cret", "later", body, expected)


# ------------------------------------------------------------------ the sender and a real broker

def test_sender_delivers_a_timeline_to_a_real_broker(tmp_path, db):
    """A result with events: the description, then each event, on the events topics; the caption
    sensor's topic keeps the description; then the outbox is empty."""
    broker = mosquitto.Broker(tmp_path / "broker").start()
    try:
        sub = mosquitto.Subscriber(broker, ("rkvideo/#",))
        cfg = settings(tmp_path, f'[notify]\nmqtt = "{broker.url()}"\nretry_backoff = 0.1\n')
        notices = notify.Notices(cfg, [FOLDER])
        events = [pipeline.Event(1.0, 2.0, "A fox arrives.", [], 0.9), pipeline.Event(3.0, 4.0, "It leaves.", [], 0.7)]
        job = queued_job(db)
        db.finish(job, a_result(events=events), messages=notices.described(job, a_result(events=events)))
        expected = [r["message"] for r in db.outbox() if r["topic"] == "rkvideo/events"]
        sender = notify.Sender(cfg, [FOLDER], lambda: store.open_store(db.location))
        sender.start(db)
        try:
            assert sender.flush(30)
        finally:
            sender.stop(db)
        got = sub.wait("rkvideo/events", 3)
        assert [m["id"] for m in got] == expected
        assert [m["event_type"] for m in got] == ["description", "event", "event"]
        assert [m["title"] for m in sub.wait("rkvideo/front_door/events", 3)] == \
               [notify.title(a_result().text), "A fox arrives.", "It leaves."]
        assert [m["event_type"] for m in sub.json("rkvideo/front_door/last")] == ["description"]
        # Said on the way out; the subscriber gets it a moment after stop() returns.
        mosquitto.poll(lambda: sub.on("rkvideo/available")[-1:] == [b"offline"], "the offline message")
        assert db.outbox() == []
        sub.close()
    finally:
        broker.stop()


def test_a_broker_that_is_not_there_is_only_a_warning(tmp_path, db, caplog):
    cfg = settings(tmp_path, f'[notify]\nmqtt = "mqtt://127.0.0.1:{mosquitto.free_port()}"\ntimeout = 2\n'
                             'retry_backoff = 0.1\nretry_max = 0.2\n')
    job = queued_job(db)
    db.finish(job, a_result(), messages=notify.Notices(cfg, [FOLDER]).described(job, a_result()))
    sender = notify.Sender(cfg, [FOLDER], lambda: store.open_store(db.location))
    with caplog.at_level(logging.INFO, logger="rkvideo"):
        sender.start(db)
        assert not sender.flush(0.5)
        sender.stop(db)
    assert "cannot connect" in caplog.text and "3 outbox row(s) wait; trying again" in caplog.text
    assert "3 outbox row(s) for mqtt://127.0.0.1" in caplog.text
    rows = db.outbox()
    assert len(rows) == 3 and rows[0]["attempts"] >= 1 and "cannot connect" in rows[0]["last_error"]

