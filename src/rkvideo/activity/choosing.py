"""Using an analysis: the stretches to describe, and the moments inside one to show the model.

Why here and not in the timeline: clip mode (``describe.frames_by = "activity"``) picks frames the
same way, and both sit above this package.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import TimelineConfig
from .result import Analysis, Span

WEIGHT_CAP = 4.0             # frame picking: a score counts up to this much


def segments(analysis: Analysis, settings: TimelineConfig) -> list:
    """The stretches to describe, one request each: spans padded by ``pad``, joined when less than
    ``segment_gap`` apart, split evenly when longer than ``max_segment``."""
    padded = [(max(0.0, s.start - settings.pad), min(analysis.duration, s.end + settings.pad), s.score)
              for s in analysis.spans]
    joined: list = []
    for lo, hi, score in padded:
        if joined and lo - joined[-1][1] < settings.segment_gap:
            joined[-1] = (joined[-1][0], max(joined[-1][1], hi), max(joined[-1][2], score))
        else:
            joined.append((lo, hi, score))
    out = []
    for lo, hi, score in joined:
        parts = max(1, math.ceil((hi - lo) / settings.max_segment - 1e-9))
        width = (hi - lo) / parts
        for k in range(parts):
            a, b = lo + k * width, lo + (k + 1) * width
            out.append(Span(round(a, 3), round(b, 3), _span_peak(analysis, a, b, score)))
    return out


def _span_peak(analysis: Analysis, lo: float, hi: float, fallback: float) -> float:
    part = analysis.scores[int(lo // analysis.step):max(int(lo // analysis.step) + 1, math.ceil(hi / analysis.step))]
    return round(float(part.max()), 3) if part.size else fallback


def pick_times(analysis: Analysis, segment: Span, n: int, min_gap: float, first: float | None = None) -> list:
    """Up to ``n`` frame times inside ``segment``: ``first`` (default: its start) always, the rest
    spread over its activity — more where the score is higher — never two closer than ``min_gap``.

    Weights are the scores inside the active spans, capped (one changed keyframe must not draw every
    frame to itself) and at least 1 there; outside them 0. A segment without activity gets even spacing.
    """
    first = segment.start if first is None else first
    times, weights = _weights(analysis, segment)
    picked = [round(first, 3)]
    if n > 1 and weights.sum() > 0:
        cumulative = np.cumsum(weights) / weights.sum()
        wanted = [times[min(len(times) - 1, int(np.searchsorted(cumulative, q)))]
                  for q in (np.arange(n - 1) + 0.5) / (n - 1)]
        by_weight = [times[i] for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
        picked = _spaced(first, wanted + by_weight, n, min_gap)
    elif n > 1:
        even = [segment.start + (k + 0.5) * segment.length / (n - 1) for k in range(n - 1)]
        picked = _spaced(first, even, n, min_gap)
    return picked


def _weights(analysis: Analysis, segment: Span) -> tuple:
    step = analysis.step
    lo = max(0, int(segment.start // step))
    hi = max(lo + 1, min(len(analysis.scores), math.ceil(segment.end / step)))
    times = np.clip((np.arange(lo, hi) + 0.5) * step, segment.start, max(segment.start, segment.end - 1e-3))
    inside = np.zeros(hi - lo, bool)
    for span in analysis.spans:
        inside |= (times >= span.start) & (times < span.end)
    weights = np.where(inside, np.clip(analysis.scores[lo:hi], 1.0, WEIGHT_CAP), 0.0)
    return times, weights


def _spaced(first: float, candidates: list, n: int, min_gap: float) -> list:
    """``first``, then candidates in their order that keep ``min_gap`` from every time kept, up to n."""
    kept = [first]
    for t in candidates:
        if len(kept) >= n:
            break
        if all(abs(t - k) >= min_gap for k in kept):
            kept.append(float(t))
    return sorted(round(t, 3) for t in kept)
