"""Where something happens in a recording, found on the CPU in one cheap pass.

Why: on an RK3588 one request costs 15–35 s of NPU time, so a 10-minute camera
recording cannot be captioned window by window; the moments that matter must
be found first, for far less than decoding the recording (which is already
more work than the NPU budget allows on long files).

How, in one pass over the packets (``analyse``):

* **Compressed sizes (demux only).** A predicted frame is small when the
  picture stands still and grows when something moves. Sizes are divided by
  the typical size at the same place in the GOP (encoders give the first
  frames after a keyframe, and B- vs P-frames, very different sizes), then by
  the recording's own quiet level around that moment (a low percentile over
  ``baseline_window``), so thresholds are relative to the recording itself:
  sensor noise and a steady drizzle raise the baseline, not the score. A
  median per ``step`` ignores single odd frames (a flash, the first frame
  after a light switch). This signal has frame resolution, so a person who
  crosses between two keyframes is seen.
* **Keyframe thumbnails (keyframes only are decoded).** A small grey picture
  of a keyframe is compared with a running background, after matching
  brightness and contrast (lighting drift, auto exposure); a compact changed
  area is activity, scattered pixels (noise, rain) are removed by a
  morphological opening. This signal sees what sizes cannot (a constant
  bitrate stream, a slow walker) and vetoes what sizes get wrong (a
  stretch of rain or drift that contains a keyframe where nothing changed).
* **Which keyframes.** Decoding a keyframe costs many predicted frames, so
  only those where the sizes start or stop growing are decoded, one every
  ``thumbnail_every`` seconds, and all of them in a flat (CBR) stream, where
  sizes hide motion.
* **Whole-picture changes.** A change of nearly the whole picture that is
  still there at the next thumbnail (lights on, the IR switch at dusk) is not
  activity: the background is taken again, the baseline starts afresh there
  (as it does where the frame rate changes), and nothing counts while the
  encoder and the camera settle.
* **All-intra streams** (MJPEG): sizes follow detail, not motion; instead
  ``intra_fps`` frames per second are decoded as thumbnails.

From the scores: an event starts at ``start`` and ends below ``end``
(hysteresis; 1.0 in ``Analysis.scores`` is the start threshold), events
shorter than ``min_event`` are dropped, gaps shorter than ``merge_gap`` are
joined; ``segments`` pads them, joins near ones and splits long ones into
request-sized pieces, and ``pick_times`` chooses frames inside a segment.

Cut-off files and read errors end the pass with a note (what was read is
analysed); a file with no usable packets raises ``AnalysisError``, which the
callers answer with a single caption.

The package, one job per module: ``reading`` (the pass and the analysis it adds up to),
``packets`` (sizes → scores), ``thumbnails`` (keyframes against the background), ``spans``
(scores and keyframes → spans), ``choosing`` (segments and frame times), ``result`` (what is
returned).
"""
from __future__ import annotations

from .choosing import pick_times, segments
from .reading import Progress, analyse
from .result import Analysis, AnalysisError, Span, clock

__all__ = ["Analysis", "AnalysisError", "Progress", "Span", "analyse", "clock", "pick_times", "segments"]
