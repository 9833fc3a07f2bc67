"""Home Assistant MQTT discovery: the devices and entities rkvideo announces, and taking them back.

Why retained configs computed from the folders: Home Assistant creates an
entity from a retained JSON config under ``<discovery_prefix>/<component>/
<node>/<object>/config`` and removes it when that topic gets an empty retained
message. The sender publishes the configs of the folders watched now at every
connection, and empties those it announced before (kept in the store,
``JobStore.announced``) that are no longer among them — so dropping a folder
from the command line removes its device, and ``notify.discovery = false``
removes them all.

What is announced: per daemon a device with a ``binary_sensor`` "Online"
(``<prefix>/available``, the last will says ``offline``) and a ``sensor``
"Queue" (recordings queued or running); per watched folder a device with a
``sensor`` "Caption" (state: the title of the last description; attributes:
its full text, times, file and URLs) and an ``event`` "Activity" that fires
with every description (``event_type: description``) and timeline event
(``event``). The folder entities carry no availability: their last caption
stays shown while the daemon is stopped (``watch --once`` from cron).
"""
from __future__ import annotations

import json

from .. import __version__
from .topics import Topics

ORIGIN = {"name": "rkvideo", "sw_version": __version__}
ATTRIBUTES = ("text", "start", "end", "file", "path", "camera", "id", "clip_url", "thumbnail_url")
ATTRIBUTES_TEMPLATE = ("{{ {" + ", ".join(f"'{k}': value_json.get('{k}')" for k in ATTRIBUTES) + "} | tojson }}")


def configs(topics: Topics, cameras: dict, discovery_prefix: str) -> dict[str, str]:
    """Discovery topic → retained JSON config, for the daemon and each camera (id → folder)."""
    node, ident = topics.node, topics.ident
    daemon = {"identifiers": [ident], "name": ident.replace("_", " "), "manufacturer": "rkvideo",
              "model": "rkvideo watch", "sw_version": __version__}
    found = {
        f"{discovery_prefix}/binary_sensor/{node}/online/config": {
            "name": "Online", "unique_id": f"{ident}_online", "state_topic": topics.available,
            "payload_on": "online", "payload_off": "offline", "device_class": "connectivity",
            "entity_category": "diagnostic", "device": daemon},
        f"{discovery_prefix}/sensor/{node}/queue/config": {
            "name": "Queue", "unique_id": f"{ident}_queue", "state_topic": topics.queue,
            "unit_of_measurement": "recordings", "state_class": "measurement", "icon": "mdi:tray-full",
            "device": daemon},
    }
    for camera, folder in sorted(cameras.items()):
        device = {"identifiers": [f"{ident}_{camera}"], "name": folder.name, "manufacturer": "rkvideo",
                  "model": "watched folder", "via_device": ident}
        found[f"{discovery_prefix}/sensor/{node}/{camera}_caption/config"] = {
            "name": "Caption", "unique_id": f"{ident}_{camera}_caption", "icon": "mdi:cctv",
            "state_topic": topics.last(camera), "value_template": "{{ value_json.title }}",
            "json_attributes_topic": topics.last(camera), "json_attributes_template": ATTRIBUTES_TEMPLATE,
            "device": device}
        found[f"{discovery_prefix}/event/{node}/{camera}_activity/config"] = {
            "name": "Activity", "unique_id": f"{ident}_{camera}_activity", "icon": "mdi:motion-sensor",
            "state_topic": topics.camera_events(camera), "event_types": ["description", "event"],
            "device": device}
    return {topic: json.dumps({**config, "origin": ORIGIN}) for topic, config in found.items()}
