"""Keyframe thumbnails against a running background: what changed in the picture, and where.

Why: compressed sizes cannot see a constant-bitrate stream move, and they rise with rain and noise
as much as with a person. A small grey picture of a keyframe, compared with a background after
matching brightness and contrast (lighting drift, auto exposure), tells a thing that moved (one
compact blob) from scattered pixels (noise, raindrops: removed by a morphological opening), and a
change of nearly the whole picture (lights on, the IR switch) from both. The background follows the
picture where nothing changed, takes in a change that stood still long enough (a parked car) and
never a moving one (which would leave a ghost).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMB_WIDTH = 128            # pixels; a person at 30 m still covers a few of them
MIN_LEVEL = 10.0             # grey levels a thumbnail pixel must change by, whatever the noise
GLOBAL_AREA = 0.5            # changed fraction of the picture that makes a change "whole-picture"
GLOBAL_SHIFT = 12.0          # grey levels of brightness change that make it whole-picture too
ABSORB = 6.0                 # seconds a change must stand still to become background (a parked car)
# Pixel formats whose first plane is 8-bit luma, read as it is instead of converted.
LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv411p", "yuv440p",
              "nv12", "nv21", "nv16", "gray"}


@dataclass
class Thumb:
    t: float                 # seconds from the start
    area: float              # changed fraction of the picture (compact changes only)
    whole: bool              # nearly the whole picture changed


class Background:
    """The running background of the thumbnails and the comparison of a new one with it."""

    def __init__(self):
        self.image: np.ndarray | None = None
        self.before: np.ndarray | None = None   # the background before a pending whole-picture change
        self.pending: Thumb | None = None      # a whole-picture change waiting for the next thumbnail
        self.last = 0.0                         # time of the thumbnail before the pending one
        self.seen = 0.0                         # time of the last thumbnail
        self.switches: list = []                # (last thumbnail before, first thumbnail after)
        self.previous: np.ndarray | None = None # the thumbnail before, as it was
        self.still_for: np.ndarray | None = None    # seconds each changed pixel has stood still

    def compare(self, t: float, gray: np.ndarray) -> list:
        """The thumbnails this one settles, as [Thumb] (a whole-picture change is settled one later)."""
        image = cv2.GaussianBlur(gray.astype(np.float32), (3, 3), 0.7)
        if self.image is None:
            self.image, self.seen, self.previous = image, t, image
            self.still_for = np.zeros_like(image)
            return [Thumb(t, 0.0, False)]
        out = []
        if self.pending is not None:
            out.append(self._settle(image))
        area, whole, changed = _change(image, self.image)
        if whole:
            self.pending, self.last = Thumb(t, 0.0, True), self.seen
            self.before, self.image = self.image, image
            self.still_for = np.zeros_like(image)
        else:
            out.append(Thumb(t, area, False))
            self._update(t, image, changed)
        self.seen, self.previous = t, image
        return out

    def _update(self, t: float, image: np.ndarray, changed: np.ndarray) -> None:
        """Follow the picture where it did not change (lighting drift); where it changed, only once it
        has stood still for ABSORB seconds (a car that parked), never a moving thing, which would
        leave a ghost behind."""
        still = changed & (np.abs(image - self.previous) <= MIN_LEVEL)
        self.still_for = np.where(still, self.still_for + (t - self.seen), 0.0)
        rate = np.where(changed, np.where(self.still_for >= ABSORB, 1.0, 0.0), 0.5).astype(np.float32)
        self.image = self.image + rate * (image - self.image)

    def _settle(self, image: np.ndarray) -> Thumb:
        """A whole-picture change that held is lighting: recalibrated. One that went away again was a
        flash or something passing close to the lens: activity at that moment."""
        pending, self.pending = self.pending, None
        went_back = _change(image, self.image)[1] and not _change(image, self.before)[1]
        if went_back:
            self.image = self.before
            pending.area, pending.whole = 1.0, False
        else:
            self.switches.append((self.last, pending.t))
        self.before = None
        return pending

    def flush(self) -> list:
        """At the end: a whole-picture change with nothing after it counts as lighting."""
        if self.pending is None:
            return []
        self.switches.append((self.last, self.pending.t))
        pending, self.pending = self.pending, None
        return [pending]


def _change(image: np.ndarray, background: np.ndarray) -> tuple[float, bool, np.ndarray]:
    """(area of the largest changed blob, whole-picture change?, changed pixels) after matching the
    background's brightness and contrast to the picture's (fitted again without the changed pixels,
    so a large thing in the picture does not skew the match)."""
    diff, shift, gain = _matched(image, background, None)
    changed = diff > _level(diff)
    if 0.0 < changed.mean() < GLOBAL_AREA:
        diff, shift, gain = _matched(image, background, ~changed)
        changed = diff > _level(diff)
    if changed.mean() > GLOBAL_AREA or abs(shift) > GLOBAL_SHIFT or not 0.8 <= gain <= 1.25:
        return float(changed.mean()), True, changed
    # Scattered pixels (noise, raindrops) go in the opening; what counts is the largest blob left,
    # since a thing that moves is one blob and rain is many small ones.
    compact = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(compact, connectivity=8)
    largest = int(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0
    return largest / compact.size, False, changed


def _matched(image: np.ndarray, background: np.ndarray, where) -> tuple[np.ndarray, float, float]:
    """|image − background matched to it| (by quartiles, over ``where`` if given), the brightness shift
    and the contrast gain."""
    a, b = (image, background) if where is None else (image[where], background[where])
    lo_i, mid_i, hi_i = np.percentile(a, (25, 50, 75))
    lo_b, mid_b, hi_b = np.percentile(b, (25, 50, 75))
    gain = (hi_i - lo_i) / max(hi_b - lo_b, 1.0)
    return np.abs(image - ((background - mid_b) * gain + mid_i)), float(mid_i - mid_b), float(gain)


def _level(diff: np.ndarray) -> float:
    """How far a pixel must differ to count as changed: 4 noise widths, at least MIN_LEVEL."""
    return max(MIN_LEVEL, 4.0 * 1.4826 * float(np.median(diff)))


def gray(frame) -> np.ndarray:
    """A small grey picture of ``frame``: its 8-bit luma plane shrunk, or a conversion for other formats."""
    width = min(THUMB_WIDTH, frame.width)
    height = max(2, round(frame.height * width / frame.width))
    name = frame.format.name
    if name in LUMA_FIRST:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
        return cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)
    return frame.reformat(width=width, height=height, format="gray").to_ndarray()
