"""From scores to spans: hysteresis over the packet scores, confirmed, vetoed and trimmed by keyframes.

Why both signals decide together: sizes have frame resolution but rise with drift and rain too;
keyframe thumbnails are right about what is in the picture but only at keyframes. So a stretch of
grown sizes is kept when nothing contradicts it, vetoed when a keyframe inside it shows nothing new,
trimmed to the unchanged keyframes around the changed ones, and a weak stretch nothing confirms must
hold some evidence. Changed keyframes the sizes did not see (a constant-bitrate or all-intra stream)
become stretches of their own, halfway to their neighbouring thumbnails.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import TimelineConfig
from .result import Span

STRONG = 3.0                 # packet scores this high stand without a changed keyframe
EVIDENCE = 1.5               # score × seconds a weak stretch nothing confirms must hold


def thumb_scores(thumbs: list, settings: TimelineConfig) -> list:
    """Per thumbnail, its changed area relative to the larger of ``min_area`` and three times the area
    that changes in most thumbnails (a tree in the wind: its area shows in the 30th percentile)."""
    areas = np.asarray([th.area for th in thumbs if not th.whole], float)
    usual = 3.0 * float(np.percentile(areas, 30)) if areas.size >= 5 else 0.0
    threshold = max(settings.min_area, usual)
    return [0.0 if th.whole else th.area / threshold for th in thumbs]


def spans(packets: np.ndarray, thumbs: list, thumb_scores: list, step: float, duration: float,
           settings: TimelineConfig, intra: bool) -> list:
    """Hysteresis over the packet scores, seeded by them and by changed thumbnails; thumbnails also
    cover what packets cannot see (flat streams, intra streams), veto packet-only stretches in which a
    keyframe looked the same as the background (rain, noise, drift) and trim stretches to the unchanged
    keyframes around the changed ones. Weak stretches nothing confirms must hold some evidence."""
    end_level = settings.end / settings.start
    seeds = packets >= 1.0
    for th, score in zip(thumbs, thumb_scores):
        if score >= 1.0:
            seeds[min(len(seeds) - 1, int(th.t // step))] = True
    grown = _grow(seeds, packets >= end_level)
    # Judged together when close (drift comes and goes around a threshold), joined by merge_gap after.
    runs = _merge([(lo * step, min(duration, (hi + 1) * step)) for lo, hi in _runs(grown)], 2 * step + 1e-9)
    if not intra:
        runs = [_trimmed(r, thumbs, thumb_scores) for r in runs
                if not _vetoed(r, packets, thumbs, thumb_scores, step) and _evident(r, packets, thumbs, thumb_scores,
                                                                                     step)]
    runs += _thumb_runs(thumbs, thumb_scores, runs, settings, duration)
    runs = [r for r in _merge(sorted(runs), settings.merge_gap) if r[1] - r[0] >= settings.min_event - 1e-9]
    return [Span(lo, hi, _peak(packets, thumbs, thumb_scores, lo, hi, step)) for lo, hi in runs]


def _evident(run: tuple, packets: np.ndarray, thumbs: list, scores: list, step: float) -> bool:
    """A stretch no changed keyframe confirms must rise sharply (STRONG) or hold EVIDENCE score-seconds:
    a blip of noise barely over the threshold is no event."""
    if any(run[0] - step <= th.t <= run[1] + step and s >= 1.0 for th, s in zip(thumbs, scores)):
        return True
    inside = packets[int(run[0] // step):max(int(run[0] // step) + 1, int(math.ceil(run[1] / step)))]
    return float(inside.max()) >= STRONG or float(inside.sum()) * step >= EVIDENCE


def _grow(seeds: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Every run of ``keep | seeds`` that contains a seed."""
    out = np.zeros_like(seeds)
    for lo, hi in _runs(keep | seeds):
        if seeds[lo:hi + 1].any():
            out[lo:hi + 1] = True
    return out


def _runs(mask: np.ndarray) -> list:
    """(first, last) index of every run of True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def _vetoed(run: tuple, packets: np.ndarray, thumbs: list, scores: list, step: float) -> bool:
    """A stretch from packet sizes alone holding keyframes where the picture looked like the
    background and none where it did not: lighting drift, rain or noise, not a thing moving (which
    would have been in those keyframes). One such keyframe is enough unless the sizes rose sharply."""
    inside = [s for th, s in zip(thumbs, scores) if run[0] + step < th.t < run[1] - step and not th.whole]
    if not inside or max(inside) >= 1.0:
        return False
    return len(inside) >= 2 or _peak(packets, [], [], run[0], run[1], step) < STRONG


def _trimmed(run: tuple, thumbs: list, scores: list) -> tuple:
    """A stretch with changed keyframes, cut at the unchanged keyframes just before the first and
    just after the last of them: nothing new was in the picture at those moments."""
    lo, hi = run
    inside = [(th.t, s) for th, s in zip(thumbs, scores) if lo < th.t < hi and not th.whole]
    active = [t for t, s in inside if s >= 1.0]
    if not active:
        return run
    before = [t for t, s in inside if s < 0.5 and t < active[0]]
    after = [t for t, s in inside if s < 0.5 and t > active[-1]]
    return (before[-1] if before else lo, after[0] if after else hi)


def _thumb_runs(thumbs: list, scores: list, runs: list, settings: TimelineConfig, duration: float) -> list:
    """Changed thumbnails that the packets did not turn into a long enough stretch (a flat stream, an
    intra stream): from halfway to the previous thumbnail to halfway to the next one."""
    out = []
    for i, (th, score) in enumerate(zip(thumbs, scores)):
        if score < 1.0:
            continue
        covered = [r for r in runs if r[0] <= th.t <= r[1] and r[1] - r[0] >= settings.min_event]
        if covered:
            continue
        before = thumbs[i - 1].t if i else max(0.0, th.t - settings.thumbnail_every)
        after = thumbs[i + 1].t if i + 1 < len(thumbs) else min(duration, th.t + settings.thumbnail_every)
        out.append(((before + th.t) / 2, (th.t + after) / 2))
    return out


def _merge(runs: list, gap: float) -> list:
    out: list = []
    for lo, hi in runs:
        if out and lo - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _peak(packets, thumbs, scores, lo: float, hi: float, step: float) -> float:
    inside = packets[int(lo // step):max(int(lo // step) + 1, int(math.ceil(hi / step)))]
    peak = float(inside.max()) if inside.size else 0.0
    for th, s in zip(thumbs, scores):
        if lo <= th.t <= hi:
            peak = max(peak, s)
    return round(peak, 3)
