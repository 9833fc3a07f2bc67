"""What rkvideo tells the house: one JSON message per description, per timeline event, per failure.

Why built here and stored before they are sent: a message is made from the
job and result the worker holds, turned into outbox rows (one per target and
MQTT topic) and committed in the same transaction as the description or the
failure (``JobStore.finish``/``fail``/``put``/``recover`` take them). Either
both are kept or neither, so a crash can never lose a message or send one for
a description that was rolled back. The sender delivers them later.

Every message has an ``id`` (a UUID made once, the same on every retry:
receivers drop duplicates by it) and ``event_type``: ``description`` (a
recording was described), ``event`` (one moment of a timeline) or ``error``
(a recording failed for good). ``start``/``end`` are wall-clock times in ISO
8601 UTC estimated from the file: cameras write a recording while they record,
so its modification time is its end and the start is that minus its duration;
``start_seconds``/``end_seconds`` are offsets into the recording. The field
list is in the README.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..config import Config
from ..store import Job, Messages, Outgoing, now
from .targets import targets
from .topics import Topics, cameras, slug

TITLE_MAX = 255          # Home Assistant's limit for a state
SENTENCE = re.compile(r"[.!?](?=\s|$)")


def title(text: str | None) -> str:
    """The first sentence of ``text`` on one line, at most 255 characters (cut at a word, with …)."""
    first = (text or "").strip().split("\n", 1)[0]
    end = SENTENCE.search(first)
    sentence = " ".join((first[:end.end()] if end else first).split())
    if len(sentence) <= TITLE_MAX:
        return sentence
    cut = sentence[:TITLE_MAX - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:") + "…"


def number(value: float) -> str:
    """A number of seconds in a URL: 12.5, 3, 0."""
    return f"{round(value, 3):g}"


class Notices:
    """Builds the outbox rows of a described or failed recording for every configured target.

    ``folders`` are the watched folders: each is a camera (see ``topics``). With no target
    configured every method returns no rows.
    """

    def __init__(self, config: Config, folders):
        self.settings = config.notify
        self.targets = targets(config)
        self.topics = Topics(self.settings.topic_prefix)
        if self.targets:
            cameras(folders)        # two folders that would be one camera are refused up front

    def __bool__(self) -> bool:
        return bool(self.targets)

    # ------------------------------------------------------------ the three kinds

    def described(self, job: Job, result, timings: dict | None = None) -> Messages:
        """The rows for a finished recording and its timeline events, as ``JobStore.finish`` wants them:
        a function of the new description's id."""
        def build(description_id: int) -> list[Outgoing]:
            if not self.targets:
                return []
            base = self.recording(job)
            messages = [self.description(base, job, result, description_id, timings or {})]
            messages += [self.event(base, job, result, description_id, n, e) for n, e in enumerate(result.events)]
            return self.rows(messages)
        return build

    def failed(self, job: Job, error: str) -> Messages:
        """The rows for a job that failed for good; a function of the job's id (``fail``/``put``)."""
        def build(job_id: int) -> list[Outgoing]:
            if not self.targets:
                return []
            base = {**self.recording(job), "job_id": job_id}
            where = base["file"] or Path(job.path).name
            return self.rows([{"id": uuid.uuid4().hex, "event_type": "error", **base,
                               "title": title(f"{where}: {error}"), "text": error, "error": error,
                               "attempts": job.attempts, **self.times(job, 0.0, job.duration),
                               "created_at": now()}])
        return build

    def recovered(self, job: Job) -> list[Outgoing]:
        """``JobStore.recover``: a job that stopped the daemon on each of its attempts."""
        return self.failed(job, job.error or "the daemon stopped during each attempt")(job.id)

    # ------------------------------------------------------------ the fields

    def recording(self, job: Job) -> dict:
        """Where the recording is: its watched folder (the job's ``root``, which names the camera), the
        file below it and the absolute path."""
        inside = job.root is not None and job.path.startswith(f"{job.root}/")
        folder = Path(job.root) if inside else None
        return {"camera": folder.name if folder else None, "camera_id": slug(folder.name) if folder else None,
                "folder": job.root if folder else None, "file": job.path[len(job.root) + 1:] if folder else None,
                "path": job.path, "job_id": job.id}

    def description(self, base: dict, job: Job, result, description_id: int, timings: dict) -> dict:
        duration = job.duration if job.duration is not None else _last_second(result.frames)
        message = {"id": uuid.uuid4().hex, "event_type": "description", **base, "description_id": description_id,
                   "title": title(result.text), "text": result.text, "summary": result.text,
                   **self.times(job, 0.0, duration),
                   "frames": self.frames(job, result.frames, description_id, base["camera_id"]),
                   "events": len(result.events), "model": dict(result.model), "tokens": _tokens(result.tokens),
                   "timings": {**result.timings, **timings}, "created_at": now()}
        return self.urls(message)

    def event(self, base: dict, job: Job, result, description_id: int, n: int, event) -> dict:
        message = {"id": uuid.uuid4().hex, "event_type": "event", **base, "description_id": description_id,
                   "event_index": n, "title": title(event.text), "text": event.text, "summary": result.text,
                   **self.times(job, event.start, event.end), "score": event.score,
                   "frames": self.frames(job, event.frames, description_id, base["camera_id"]),
                   "model": dict(result.model), "created_at": now()}
        return self.urls(message)

    def times(self, job: Job, start: float, end: float | None) -> dict:
        """Offsets into the recording and, when its file time and duration are known, wall-clock times."""
        began = _began(job)
        return {"start": _iso(began, start), "end": _iso(began, end), "start_seconds": start,
                "end_seconds": end}

    def frames(self, job: Job, frames: list, description_id: int, camera: str | None) -> list[dict]:
        began = _began(job)
        shown = []
        for n, frame in enumerate(frames):
            item = {"index": frame.get("index"), "seconds": frame.get("seconds"),
                    "time": _iso(began, frame.get("seconds"))}
            if self.settings.base_url:
                item["url"] = self.url(self.settings.thumbnail_path, job_id=job.id, description_id=description_id,
                                       camera=camera or "", frame=n, index=frame.get("index"),
                                       seconds=number(frame.get("seconds") or 0.0))
            shown.append(item)
        return shown

    def urls(self, message: dict) -> dict:
        """``clip_url`` and ``thumbnail_url`` (the first frame's) when ``notify.base_url`` is set."""
        if self.settings.base_url:
            end = message["end_seconds"]
            message["clip_url"] = self.url(self.settings.clip_path, job_id=message["job_id"],
                                           description_id=message["description_id"],
                                           camera=message["camera_id"] or "",
                                           start_seconds=number(message["start_seconds"]),
                                           end_seconds=number(end) if end is not None else "")
            message["thumbnail_url"] = message["frames"][0]["url"] if message["frames"] else None
        return message

    def url(self, template: str, **fields) -> str:
        return self.settings.base_url.rstrip("/") + "/" + template.format(**fields).lstrip("/")

    # ------------------------------------------------------------ rows per target

    def rows(self, messages: list[dict]) -> list[Outgoing]:
        """Each message for each target: a webhook gets it once; the broker on every topic it belongs to."""
        rows = []
        for target in self.targets:
            for message in messages:
                payload = json.dumps(message, ensure_ascii=False)
                for topic, retain in self.routes(message) if target.kind == "mqtt" else [(None, False)]:
                    rows.append(Outgoing(target=target.key, message=message["id"], payload=payload, topic=topic,
                                         retain=retain, job_id=message["job_id"]))
        return rows

    def routes(self, message: dict) -> list[tuple[str, bool]]:
        """(topic, retain) for one message."""
        if message["event_type"] == "error":
            return [(self.topics.errors, False)]
        routes = [(self.topics.events, False)]
        camera = message["camera_id"]
        if camera:
            routes.append((self.topics.camera_events(camera), False))
            if message["event_type"] == "description":
                routes.append((self.topics.last(camera), True))
        return routes


def _began(job: Job) -> datetime | None:
    """When the recording started: its file's modification time minus its duration."""
    if job.mtime is None or job.duration is None:
        return None
    return datetime.fromtimestamp(job.mtime, timezone.utc) - timedelta(seconds=job.duration)


def _iso(began: datetime | None, seconds: float | None) -> str | None:
    if began is None or seconds is None:
        return None
    return (began + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _last_second(frames: list) -> float | None:
    return max((f.get("seconds") or 0.0 for f in frames), default=None)


def _tokens(tokens) -> dict:
    return tokens if isinstance(tokens, dict) else tokens.as_dict()
