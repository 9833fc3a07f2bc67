"""Notifications: MQTT (with Home Assistant discovery) and webhooks, delivered from an outbox.

Why an outbox: a message must reach the house even when the broker or the
web server is down when the recording is described, and even when the daemon
is killed before it could send. So the worker never sends: it hands the rows
``Notices`` builds to the store, which commits them with the description (or
the failure) in one transaction, and ``Sender``'s threads deliver them later,
in order per target, deleting each row only once the target took it.

The parts, each with one job:

* ``targets``: the configured broker and webhooks, each with a stable key;
* ``topics``: the MQTT topic names and a camera's id (a watched folder);
* ``messages``: the JSON messages and their outbox rows (``Notices``);
* ``discovery``: Home Assistant's discovery configs;
* ``mqtt``: one broker connection (paho-mqtt, the ``[notify]`` extra);
* ``webhook``: a signed POST, and ``verify`` for receivers;
* ``sender``: the delivery threads, back-off, expiry, flush.
"""
from __future__ import annotations

from .messages import Notices, title
from .sender import Sender, expire
from .targets import targets
from .topics import Topics, slug
from .webhook import sign, verify

__all__ = ["Notices", "Sender", "Topics", "expire", "sign", "slug", "targets", "title", "verify"]
