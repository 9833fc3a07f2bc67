"""Timeline mode on a 10-minute 1080p camera-like recording: how cheap is the activity analysis, how
well does it find the moments, and what does describing them cost on the NPU?

Usage:  python benchmarks/timeline.py [--scale 10] [--preset ultrafast] [--repeat 1]

Makes once (cached under benchmarks/.cache/, a few minutes on 2 cores) a 600 s 1080p30 H.264 clip
with a 2 s GOP from tests/camera.py: a textured static scene with sensor noise and lighting drift,
fourteen objects crossing at known times (small and large, 3–40 s), a whole-picture brightness
switch that stays (at 5:07) and 40 s of rain-like flicker. Then, in one run:

* the activity analysis (``activity.analyse``): wall and CPU time as a multiple of real time, and the
  same for decoding every frame with PyAV (the baseline, measured here in the same run);
* recall and precision per second of activity: the seconds of the true crossings covered by the
  spans found, and the seconds of the spans that are true — for the spans as detected and for the
  padded, joined segments that are described;
* NPU cost of three ways to describe the recording, with stand-in runtimes at the RK3588's published
  latency for Qwen3-VL-2B (encoder 2.08 s per frame per NPU core, three cores; prefill 649 ms per 196
  tokens; decode 14.91 tokens/s — docs/board.md, "Published RK3588 performance") divided by
  ``--scale`` as benchmarks/pipeline.py does: the timeline (one request per segment + one text-only
  summary), fixed 20 s windows (30 requests + a summary) and one caption for the whole clip. The
  table gives the requests, the measured time × scale (the board's time) and how many of the true
  moments had a frame of their own in some request.

Targets (issue 11): analysis ≥ 100× real time and ≥ 10× faster than decoding every frame; recall
≥ 0.95 and precision ≥ 0.9; NPU requests ≤ segments + 1. Compare ratios; absolute times depend on the
machine and whatever else it runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import camera  # noqa: E402
from camera import Crossing, Scene  # noqa: E402
from pipeline import NPUCoreStandIn  # noqa: E402  (benchmarks/pipeline.py: one NPU core's encoder)

from rkvideo import activity, assemble, config as config_mod, media, models, pipeline, timeline  # noqa: E402
from rkvideo.llm import Generation  # noqa: E402
from rkvideo.vision import VisionPool  # noqa: E402

CACHE = ROOT / "benchmarks" / ".cache"
PROFILE = "qwen3-vl-2b"
ENCODE = 2.08               # s per frame on one NPU core (Qwen3-VL-2B, 448²)
PREFILL = 0.649 / 196       # s per prompt token
DECODE = 1 / 14.91          # s per generated token
CAPTION_TOKENS, SUMMARY_TOKENS = 60, 120
WINDOW = 20.0

CROSSINGS = (
    Crossing(21, 33), Crossing(64, 67, size=0.1), Crossing(95, 135, size=0.3), Crossing(170, 176, size=0.5),
    Crossing(201, 214, size=0.12), Crossing(250, 253), Crossing(282, 300, size=0.4),
    Crossing(330, 342, row=0.3), Crossing(371, 376, size=0.08), Crossing(405, 430, size=0.25),
    Crossing(455, 460, row=0.7), Crossing(498, 521, size=0.15), Crossing(540, 544, size=0.5),
    Crossing(575, 590),
)
SCENE = Scene(seconds=600, fps=30, size=(1920, 1080), gop=2.0, crossings=CROSSINGS, switch_at=307.4,
              flicker=(225, 245), drift=0.05, drift_period=300.0, preset="ultrafast")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def clip(preset: str) -> Path:
    path = CACHE / f"timeline-1080p-{preset}.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        print(f"making {path.name} (once; a few minutes) …", flush=True)
        partial = camera.make(path.with_suffix(".part.mp4"), dataclasses.replace(SCENE, preset=preset))
        partial.rename(path)
        print(f"  made in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def timed(work) -> tuple:
    c0, t0 = cpu(), time.perf_counter()
    value = work()
    return value, time.perf_counter() - t0, cpu() - c0


def decode_everything(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def overlap(spans: list, truth: list) -> float:
    """Seconds covered by both lists of (start, end)."""
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans for c, d in truth)


def length(spans: list) -> float:
    return sum(b - a for a, b in spans)


# ----------------------------------------------------------------------------------- stand-ins

class LLMStandIn:
    """Waits the published prefill and decode time (÷ scale) and counts the requests."""

    path = "llm-stand-in"
    placeholder_rule = assemble.PER_IMAGE

    def __init__(self, profile, scale: float):
        self.input_width = profile.encoder_width
        self.scale = scale
        self.requests = self.images = self.text_only = 0

    def _wait(self, prompt_tokens: int, new: int) -> dict:
        prefill, generate = prompt_tokens * PREFILL / self.scale, new * DECODE / self.scale
        time.sleep(prefill + generate)
        return {"prefill": prefill, "generate": generate}

    def generate(self, request, on_text=None):
        self.requests += 1
        self.images += request.n_images
        tokens = request.prompt_tokens + request.vision_tokens
        text = "A person walks across the picture. " * (CAPTION_TOKENS // 7)
        return Generation(text, tokens, CAPTION_TOKENS, self._wait(tokens, CAPTION_TOKENS), "eos")

    def generate_text(self, request, on_text=None):
        self.requests += 1
        self.text_only += 1
        text = "Several people and vehicles pass; the light changes at 05:07. " * 8
        return Generation(text, request.prompt_tokens, SUMMARY_TOKENS, self._wait(request.prompt_tokens,
                                                                                    SUMMARY_TOKENS), "eos")

    def abort(self):
        pass

    def close(self):
        pass


def describer(scale: float):
    cfg = config_mod.Config()
    cfg.model.profile = PROFILE
    cfg.llm.max_new_tokens = 128
    cfg.describe.frames = 8
    profile = models.resolve(cfg.model)
    pool = VisionPool([NPUCoreStandIn(profile, ENCODE / scale) for _ in range(3)], profile, queue_size=4)
    llm = LLMStandIn(profile, scale)
    return pipeline.Describer(cfg, vision=pool, llm=llm), llm


def covered(frame_times: list) -> int:
    """True moments with at least one frame inside them."""
    return sum(any(c.start <= t < c.end for t in frame_times) for c in CROSSINGS)


def way_timeline(path: Path, scale: float) -> dict:
    d, llm = describer(scale)
    with d:
        result, wall, _ = timed(lambda: timeline.describe(d, path, timeline.Options(mode="timeline")))
    return {"requests": llm.requests, "segments": len(result.events), "wall": wall,
            "covered": covered([f["seconds"] for f in result.frames]), "result": result}


def way_windows(path: Path, scale: float) -> dict:
    d, llm = describer(scale)
    seen = []
    with d:
        def run():
            lines = []
            plan = d.plan("Describe this part.", 8, 128, pipeline.Kind.VIDEO)
            for k in range(math.ceil(SCENE.seconds / WINDOW)):
                lo = k * WINDOW
                times = [lo + (i + 0.5) * WINDOW / plan.frames for i in range(plan.frames)]
                frames, text, tokens, _ = d.caption(media.sample_at(str(path), times), "Describe this part.", plan)
                seen.extend(f.seconds for f in frames)
                lines.append(timeline.Line(lo, lo + WINDOW, text, tokens.new))
            timeline.summarise(d, lines, SCENE.seconds, "Summarise the recording.", 128)
        _, wall, _ = timed(run)
    return {"requests": llm.requests, "segments": math.ceil(SCENE.seconds / WINDOW), "wall": wall,
            "covered": covered(seen)}


def way_clip(path: Path, scale: float) -> dict:
    d, llm = describer(scale)
    with d:
        result, wall, _ = timed(lambda: d.describe_video(path, frames=8))
    return {"requests": llm.requests, "segments": 1, "wall": wall, "covered": covered([f["seconds"] for f in
                                                                                     result.frames])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0, help="divide the published latencies by this")
    parser.add_argument("--preset", default="ultrafast", help="x264 preset of the generated clip")
    parser.add_argument("--repeat", type=int, default=1, help="analysis runs; the fastest counts")
    args = parser.parse_args(argv)
    path = clip(args.preset)
    info = media.probe(str(path))
    print(f"clip: {path.name}: {info.width}×{info.height} {info.codec}, {info.duration:.0f} s at {info.fps:.0f} fps, "
          f"GOP {SCENE.gop:g} s (x264 {args.preset}); {len(CROSSINGS)} crossings, switch at "
          f"{SCENE.switch_at} s, flicker {SCENE.flicker[0]:g}–{SCENE.flicker[1]:g} s\n")

    settings = config_mod.TimelineConfig()
    runs = [timed(lambda: activity.analyse(path, settings)) for _ in range(args.repeat)]
    analysis, wall, cpu_s = min(runs, key=lambda r: r[1])
    frames, all_wall, all_cpu = timed(lambda: decode_everything(path))
    real = info.duration
    print("| pass | wall s | CPU s | × real time (wall) | × real time (CPU) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| activity analysis ({analysis.thumbnails} of {analysis.keyframes} keyframes decoded) | {wall:.2f} | "
          f"{cpu_s:.2f} | {real / wall:.0f}× | {real / cpu_s:.0f}× |")
    print(f"| decode every frame ({frames} frames) | {all_wall:.2f} | {all_cpu:.2f} | {real / all_wall:.0f}× | "
          f"{real / all_cpu:.0f}× |")
    print(f"\nanalysis vs decoding every frame: {all_wall / wall:.1f}× less wall time, {all_cpu / cpu_s:.1f}× less "
          f"CPU (target ≥ 10×); {real / wall:.0f}× real time (target ≥ 100×)")

    truth = [(c.start, c.end) for c in CROSSINGS]
    detected = [(s.start, s.end) for s in analysis.spans]
    segments = [(s.start, s.end) for s in activity.segments(analysis, settings)]
    print("\n| spans | count | seconds | recall | precision |")
    print("|---|---:|---:|---:|---:|")
    print(f"| truth | {len(truth)} | {length(truth):.0f} | | |")
    for name, spans in (("detected", detected), ("described segments (padded, joined)", segments)):
        hit = overlap(spans, truth)
        print(f"| {name} | {len(spans)} | {length(spans):.0f} | {hit / length(truth):.3f} | "
              f"{hit / max(length(spans), 1e-9):.3f} |")
    missed = [c for c in CROSSINGS if not any(a < c.end and c.start < b for a, b in detected)]
    print(f"true moments missed: {len(missed)} {[(c.start, c.end) for c in missed] if missed else ''}")
    print(f"whole-picture changes taken as lighting: {[round(s, 1) for s in analysis.switches]}")

    print(f"\nNPU stand-in: published RK3588 latencies ÷ {args.scale:g}; board time = measured × {args.scale:g}")
    print("| way | requests | segments | measured s | board s (est.) | true moments with a frame |")
    print("|---|---:|---:|---:|---:|---:|")
    ways = (("timeline", way_timeline), (f"fixed {WINDOW:.0f} s windows + summary", way_windows),
            ("one clip caption", way_clip))
    results = {}
    for name, way in ways:
        r = results[name] = way(path, args.scale)
        print(f"| {name} | {r['requests']} | {r['segments']} | {r['wall']:.1f} | {r['wall'] * args.scale:.0f} | "
              f"{r['covered']} of {len(CROSSINGS)} |")
    t = results["timeline"]
    verdict = "meets" if t["requests"] <= t["segments"] + 1 else "MISSES"
    print(f"\ntimeline: {t['requests']} requests for {t['segments']} segments ({verdict} ≤ segments + 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
