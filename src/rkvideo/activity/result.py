"""What an activity analysis returns: the spans found, the scores over time, the figures behind them.

Why a module of its own: the analysis (``reading`` and the modules it uses) produces these and the
callers (``choosing``, the timeline, the command line) read them; neither side needs the other's code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..media import MediaError


class AnalysisError(MediaError):
    """The activity of a recording cannot be analysed; the callers fall back to one caption."""


@dataclass(frozen=True)
class Span:
    """A stretch of the recording in seconds from its start, with its peak score (1.0 = the start level)."""
    start: float
    end: float
    score: float = 0.0

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass
class Analysis:
    """The outcome of ``analyse``: scores per ``step`` and the active spans (unpadded)."""
    duration: float
    step: float
    scores: np.ndarray               # activity per step, 1.0 = the start threshold
    spans: list                      # [Span], before padding
    method: str                      # "packets and keyframes" or "intra frames"
    frames: int                      # compressed frames read
    keyframes: int                   # keyframes seen
    thumbnails: int                  # pictures decoded
    switches: list = field(default_factory=list)    # seconds of whole-picture changes (recalibrations)
    baseline: float = 0.0            # bytes of a quiet predicted frame (median), 0 for intra streams
    notes: list = field(default_factory=list)
    seconds: float = 0.0             # wall time of the analysis

    @property
    def peak(self) -> float:
        return float(self.scores.max()) if self.scores.size else 0.0

    def figures(self) -> dict:
        """The numbers behind the result, JSON-ready (``plan.activity`` of a timeline result)."""
        return {"duration": round(self.duration, 3), "method": self.method, "frames": self.frames,
                "keyframes": self.keyframes, "thumbnails": self.thumbnails,
                "baseline_bytes": round(self.baseline, 1), "peak": round(self.peak, 3),
                "switches": [round(s, 2) for s in self.switches],
                "spans": [[round(s.start, 2), round(s.end, 2)] for s in self.spans],
                "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        """One line of figures, for a description that says nothing happened."""
        what = (f"{self.frames} compressed frames, {self.thumbnails} of {self.keyframes} keyframes decoded"
                if self.method != "intra frames" else f"{self.thumbnails} of {self.frames} frames decoded")
        switches = f", {len(self.switches)} whole-picture change(s) taken as lighting" if self.switches else ""
        return (f"{what}; peak activity {self.peak:.2f} of the start threshold{switches}; "
                f"analysed in {self.seconds:.1f} s")


def clock(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour on: how times of a recording are written for people."""
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
