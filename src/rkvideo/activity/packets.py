"""Compressed frame sizes as an activity score over time, relative to the recording's own baseline.

Why sizes: a predicted frame is small when the picture stands still and grows when something moves,
and reading sizes needs no decoding. They are divided by the usual size at the same place in the GOP
(the frames right after a keyframe, B- against P-frames), then by the recording's quiet level around
each moment (a low percentile over ``baseline_window``), and the rise is counted in noise widths
measured between neighbouring steps: sensor noise and a steady drizzle raise the baseline, not the
score. A median per step ignores single odd frames. The baseline starts afresh where the picture
changed as a whole or the frame rate changed, and nothing counts while the encoder settles after
such a change.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import TimelineConfig

SETTLE = 3.0                 # seconds a camera takes to settle after a whole-picture change


def packet_scores(t: np.ndarray, sizes: np.ndarray, keys: np.ndarray, positions: np.ndarray, bins: int, step: float,
                  switches: list, settings: TimelineConfig) -> tuple[np.ndarray, float]:
    """Per step: how far the predicted frames rose above the recording's own quiet level, scaled so
    that 1.0 is the start threshold. Also returns the typical size of a predicted frame."""
    # Places in the GOP, finer near the keyframe: 1, 2, 3, 4–7, 8–15, … frames after it.
    places = np.floor(np.log2(np.maximum(positions, 1))).astype(int)
    places = np.where(positions < 4, positions, places + 2)
    predicted = ~keys & (sizes > 0)
    if predicted.sum() < 3:
        return np.zeros(bins), 0.0
    typical = float(np.median(sizes[predicted]))
    # The usual size at each place (the frames right after a keyframe, the slow growth of residuals
    # towards the next one); a place seen too rarely to tell takes the usual size of all.
    usual = np.full(places.max() + 1, typical)
    for place in np.unique(places[predicted]):
        at = predicted & (places == place)
        if at.sum() >= 8:
            usual[place] = float(np.median(sizes[at]))
    ratio = sizes[predicted] / np.maximum(usual[places[predicted]], 1.0)
    index = np.minimum((t[predicted] // step).astype(int), bins - 1)
    value = _bin_medians(index, ratio, bins)
    # The baseline and the noise start afresh where the picture changed as a whole (night noise is
    # not day noise) and where the frame rate changed (a slower camera codes more per frame).
    changes = list(switches) + _rate_changes(t)
    cuts = sorted({min(bins, max(0, int(c // step))) for c in changes})
    scores = np.zeros(bins)
    for lo, hi in zip([0] + cuts, cuts + [bins]):
        if hi > lo:
            scores[lo:hi] = _rise(value[lo:hi], step, settings)
    _settle(scores, changes, step)
    return scores, typical


def _rise(value: np.ndarray, step: float, settings: TimelineConfig) -> np.ndarray:
    """Scores of one stretch with one baseline: the rise over its quiet level in noise widths, 1.0 at
    the start threshold."""
    rise = value / _quiet_level(value, step, settings.baseline_window) - 1.0
    # The noise of the steps, from the differences between neighbours: a long stretch of rain or
    # activity moves the level, not the differences (MAD of a difference is √2 that of a value).
    steps = np.diff(rise) if rise.size > 2 else np.zeros(1)
    noise = max(1.4826 * float(np.median(np.abs(steps))) / math.sqrt(2), 0.02)
    return np.maximum(rise / max(settings.start * noise, settings.min_rise), 0.0)


def _rate_changes(t: np.ndarray, window: float = 5.0) -> list:
    """Times where the frame rate changed by half or more and stayed so (variable-frame-rate cameras
    slow down in the dark)."""
    counts = np.bincount((np.sort(t) // window).astype(int)).astype(float)
    out = []
    for i in range(1, len(counts) - 1):
        before, now, after = counts[i - 1], counts[i], counts[i + 1]
        if min(before, now) > 0 and max(before, now) / min(before, now) >= 1.5 and abs(after - now) <= 0.2 * now:
            out.append(i * window)
    return out


def _bin_medians(index: np.ndarray, values: np.ndarray, bins: int) -> np.ndarray:
    """The median of ``values`` per bin; empty bins take their neighbours' values."""
    out = np.full(bins, np.nan)
    order = np.argsort(index, kind="stable")
    index, values = index[order], values[order]
    edges = np.flatnonzero(np.diff(index)) + 1
    for chunk_index, chunk in zip(np.split(index, edges), np.split(values, edges)):
        out[chunk_index[0]] = np.median(chunk)
    known = np.flatnonzero(~np.isnan(out))
    if known.size == 0:
        return np.ones(bins)
    return np.interp(np.arange(bins), known, out[known])


def _quiet_level(value: np.ndarray, step: float, window: float) -> np.ndarray:
    """A low percentile of ``value`` over ``window`` seconds around each step."""
    half = max(1, int(window / step / 2))
    hop = max(1, half // 8)
    centres = np.arange(0, len(value), hop)
    quiet = [np.percentile(value[max(0, c - half):c + half + 1], 30) for c in centres]
    return np.maximum(np.interp(np.arange(len(value)), centres, quiet), 1e-6)


def when(t: np.ndarray, sizes: np.ndarray, keys: np.ndarray, changes: list) -> list:
    """When each whole-picture change happened: the largest predicted frame between the thumbnail
    before it and the one that showed it (the encoder re-codes the picture there)."""
    predicted = ~keys
    typical = float(np.median(sizes[predicted])) if predicted.any() else 0.0
    out = []
    for after, at in changes:
        inside = np.flatnonzero(predicted & (t > after) & (t <= at))
        largest = inside[np.argmax(sizes[inside])] if inside.size else None
        # An encoder with weighted prediction codes a brightness step cheaply: then nothing marks
        # the moment, and the middle of the interval is the best guess.
        spike = largest is not None and sizes[largest] > 3 * typical
        out.append(float(t[largest]) if spike else (after + at) / 2)
    return out


def _settle(scores: np.ndarray, changes: list, step: float) -> None:
    """Nothing counts from just before a whole-picture or frame-rate change to SETTLE seconds after it:
    the encoder re-codes the picture and the camera settles its exposure there."""
    for when in changes:
        scores[max(0, int(when // step) - 1):max(0, int((when + SETTLE) // step) + 1)] = 0.0
