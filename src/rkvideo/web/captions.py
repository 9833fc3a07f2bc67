"""The captions track of the recording page, made from the database, never read from a sidecar.

Why from the database: the sidecar may not exist (``output.sidecars`` is off by
default), may sit where the server may not read, or may belong to another
description; the page shows one chosen description, so its track is made from
that row. A description with moments (timeline mode) gives one cue per moment,
at its own times; one without gives the cues the ``vtt`` sidecar has (one per
sampled frame's stretch of the clip), through the same renderer.
"""
from __future__ import annotations

from ..output import vtt


def webvtt(description: dict, events: list, duration: float | None) -> str:
    """The WebVTT file for ``description`` (a store row) and its ``events`` (``JobStore.events``)."""
    if not events:
        return vtt.webvtt(description.get("frames") or [], duration, description.get("text") or "") + "\n"
    out = ["WEBVTT", ""]
    for n, event in enumerate(events, 1):
        start, end = float(event["start"]), float(event["end"])
        out += [str(n), f"{vtt.clock(start)} --> {vtt.clock(max(end, start + 0.5))}",
                vtt.escape(event.get("text") or "") or "…", ""]
    return "\n".join(out) + "\n"
