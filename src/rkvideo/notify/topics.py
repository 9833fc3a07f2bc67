"""Where messages go on MQTT: the topic names, and a camera's name in them.

Why one place: the messages (``messages``), Home Assistant's discovery configs
(``discovery``) and the README must agree on every topic, and a camera's id
must be the same in all of them. A camera is a watched folder; its id is the
folder's name made safe for topics and Home Assistant ids (lower case,
letters, digits, ``_`` and ``-``), so ``/srv/cameras/Front Door`` is
``front_door``. Two watched folders with one id would share topics and
entities, so ``cameras`` refuses them.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import UsageError


def slug(name: str) -> str:
    """``name`` as a topic level and Home Assistant id: ``Front Door`` → ``front_door``."""
    return re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_") or "_"


def cameras(folders) -> dict[str, Path]:
    """Camera id → watched folder; two folders with one id are a usage error naming both."""
    found: dict[str, Path] = {}
    for folder in map(Path, folders):
        other = found.setdefault(slug(folder.name), folder)
        if other != folder:
            raise UsageError(f"{other} and {folder}: both would be camera {slug(folder.name)!r} on MQTT (notify "
                             f"names cameras after the watched folder; watch folders with different names)")
    return found


class Topics:
    """The topics under ``notify.topic_prefix`` (default ``rkvideo``)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.node = slug(prefix)        # this daemon's level in discovery topics
        # The daemon's Home Assistant id, the start of every unique id: "rkvideo" for the default prefix.
        self.ident = "rkvideo" if self.node == "rkvideo" else f"rkvideo_{self.node}"
        self.available = f"{prefix}/available"      # "online"/"offline", retained, the last will
        self.events = f"{prefix}/events"            # every description and event
        self.errors = f"{prefix}/errors"            # failed jobs
        self.queue = f"{prefix}/queue"              # recordings queued or running, retained

    def last(self, camera: str) -> str:
        """The camera's latest description, retained (the caption sensor's state)."""
        return f"{self.prefix}/{camera}/last"

    def camera_events(self, camera: str) -> str:
        """The camera's descriptions and events (its Home Assistant event entity)."""
        return f"{self.prefix}/{camera}/events"
