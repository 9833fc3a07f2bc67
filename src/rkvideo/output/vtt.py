"""The WebVTT sidecar: one cue per sampled frame, the description spread over the cues — or, for a
timeline, one cue per moment with its own caption.

Why this shape: the clip is cut at the midpoints between neighbouring frames,
so each cue covers the stretch of the recording its frame stands for. The
description is one text for the whole clip; its sentences are spread over the
cues in order, because a description built from time-stamped frames narrates
in time order. A timeline already has its moments with start, end and text:
a player shows each caption exactly while its moment plays.
"""
from __future__ import annotations

import re


def webvtt(frames: list, duration: float | None, text: str) -> str:
    """The whole file: ``frames`` as in ``Result.as_json()["frames"]``, ``duration`` in seconds if known."""
    stamps = [float(f["seconds"]) for f in frames]
    spans = segments(stamps, duration)
    lines = sentences(text) or [""]
    out = ["WEBVTT", ""]
    for i, (start, end) in enumerate(spans):
        # Sentences [i·S/N, (i+1)·S/N) belong to cue i; with fewer sentences than
        # cues a sentence stays on screen over several cues.
        first, last = i * len(lines) // len(spans), (i + 1) * len(lines) // len(spans)
        cue = " ".join(lines[first:max(last, first + 1)])
        out += [str(i + 1), f"{clock(start)} --> {clock(end)}", escape(cue) or "…", ""]
    return "\n".join(out)


def events_webvtt(events: list) -> str:
    """The whole file for a timeline: one cue per event (``Result.as_json()["events"]``)."""
    out = ["WEBVTT", ""]
    for i, event in enumerate(events):
        out += [str(i + 1), f"{clock(event['start'])} --> {clock(event['end'])}", escape(event["text"]) or "…", ""]
    return "\n".join(out)


def segments(stamps: list, duration: float | None) -> list:
    """(start, end) per frame: cut at midpoints between frames, from 0 to the clip's end."""
    if not stamps:
        return []
    end = max(duration or 0.0, stamps[-1])
    if end <= stamps[-1]:
        # No duration known: give the last frame as long as the one before.
        end = stamps[-1] + (stamps[-1] - stamps[-2] if len(stamps) > 1 else 1.0)
    cuts = [(a + b) / 2 for a, b in zip(stamps, stamps[1:])]
    return list(zip([0.0] + cuts, cuts + [end]))


def sentences(text: str) -> list:
    parts = re.split(r"(?<=[.!?。！？])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def clock(seconds: float) -> str:
    """``HH:MM:SS.mmm``, the cue timing format."""
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def escape(text: str) -> str:
    # Cue text is markup: escape it, and keep "-->" from ending the cue early.
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.split())
