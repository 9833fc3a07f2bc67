"""Timeline mode: a long recording becomes the moments where something happens, each described, then
one summary.

Why: one caption from eight frames spread over ten minutes misses the twelve seconds that matter, and
captioning fixed windows costs more NPU time than the recording lasts. So the CPU finds the moments
first (``activity``), and the NPU spends one request per segment (frames chosen where the activity is,
with times relative to the recording), then one request without images that turns the segment
captions into the recording's summary. A recording without activity costs no request at all.

``describe`` is what the command line and the daemon call for every video: it picks clip or timeline
mode (``describe.mode``; "auto" chooses by ``timeline.min_duration``) and returns a ``Result`` whose
``events`` are the described segments and whose ``text`` is the summary. A resumed description passes
the segments finished before (``kept``): a segment with the same span is not described again, and
``on_event`` is told about each new one as soon as it is finished (the daemon stores it, so a crash
loses at most the segment being described).

If the captions do not fit one context, they are summarised in groups first, and the group summaries
(with their spans) are summarised again. If the activity analysis fails, the recording gets a single
caption with a note.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import activity, budget, media
from .errors import Interrupted
from .pipeline import Event, Kind, OnFrame, OnPlan, OnText, Result, Timings, Tokens, frame_info

MODES = ("clip", "timeline", "auto")
GROUP_PROMPT = "Summarise these moments of the recording in one or two sentences, keeping their times."

# on_stage(stage, done, total): ("analysis", seconds read, duration or None), ("segment", k, n), ("summary", k, n)
OnStage = Callable[[str, float, float | None], None]
OnEvent = Callable[[Event], None]


@dataclass
class Options:
    """What one ``describe`` call may override; None takes the config's value."""
    mode: str | None = None
    frames: int | None = None
    prompt: str | None = None
    max_new_tokens: int | None = None
    seek: str | None = None
    frames_by: str | None = None
    thumbnails: bool = False        # a small JPEG of each frame the model saw (Result.thumbnails)


@dataclass
class Hooks:
    """Callbacks of one ``describe`` call, all optional. ``stopped()`` true ends it with Interrupted."""
    on_text: OnText | None = None
    on_frame: OnFrame | None = None
    on_plan: OnPlan | None = None
    on_stage: OnStage | None = None
    on_event: OnEvent | None = None
    stopped: Callable[[], bool] | None = None

    def stage(self, name: str, done: float, total: float | None) -> None:
        self.check()
        if self.on_stage:
            self.on_stage(name, done, total)

    def check(self) -> None:
        if self.stopped is not None and self.stopped():
            raise Interrupted("stopped")


def mode_for(describer, path, mode: str | None = None) -> str:
    """"clip" or "timeline" for ``path``: the mode asked for, "auto" decided by the recording's length."""
    mode = mode or describer.config.describe.mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "auto":
        long = media.probe(str(path)).duration > describer.config.timeline.min_duration
        return "timeline" if long else "clip"
    return mode


def describe(describer, path, options: Options | None = None, hooks: Hooks | None = None,
             kept: Iterable[dict] = ()) -> Result:
    """Describe one video in the mode the options or the config ask for (see the module docstring)."""
    options, hooks = options or Options(), hooks or Hooks()
    if mode_for(describer, path, options.mode) == "clip":
        return _clip(describer, path, options, hooks)
    return _Timeline(describer, str(path), options, hooks, kept).run()


def _clip(describer, path, options: Options, hooks: Hooks, note: str | None = None) -> Result:
    result = describer.describe_video(path, frames=options.frames, prompt=options.prompt,
                                      max_new_tokens=options.max_new_tokens, seek=options.seek,
                                      frames_by=options.frames_by, on_text=hooks.on_text,
                                      on_frame=hooks.on_frame, on_plan=hooks.on_plan, thumbnails=options.thumbnails)
    if note:
        result.notes.append(note)
    return result


@dataclass
class _Totals:
    """Token counts and seconds summed over the requests of one timeline."""
    prompt: int = 0
    vision: int = 0
    new: int = 0
    timings: dict = field(default_factory=dict)

    def add(self, tokens: Tokens, timings: dict) -> None:
        self.prompt += tokens.prompt
        self.vision += tokens.vision
        self.new += tokens.new
        for key, value in timings.items():
            self.timings[key] = round(self.timings.get(key, 0.0) + value, 4)

    def tokens(self) -> Tokens:
        return Tokens(prompt=self.prompt, vision=self.vision, new=self.new)


class _Timeline:
    """One recording in timeline mode: analysis, one request per segment, the summary."""

    def __init__(self, describer, path: str, options: Options, hooks: Hooks, kept: Iterable[dict]):
        self.describer, self.path, self.options, self.hooks = describer, path, options, hooks
        self.config = describer.config
        self.settings = self.config.timeline
        self.kept = {(round(float(e["start"]), 3), round(float(e["end"]), 3)): e for e in kept}
        self.max_new_tokens = options.max_new_tokens or self.config.llm.max_new_tokens
        self.prompt = options.prompt or self.settings.prompt
        self.totals = _Totals()
        self.notes: list = []
        self.caption_tokens: dict = {}     # (start, end) -> tokens the model generated for that caption
        self.thumbnails: list | None = [] if options.thumbnails else None    # JPEGs, in the order of the frames

    def run(self) -> Result:
        started = time.perf_counter()
        try:
            analysis = activity.analyse(self.path, self.settings,
                                        on_progress=lambda done, total: self.hooks.stage("analysis", done, total))
        except activity.AnalysisError as exc:
            return _clip(self.describer, self.path, self.options, self.hooks,
                         note=f"timeline not possible, described as one clip: {exc}")
        self.totals.timings["analysis"] = round(analysis.seconds, 4)
        self.notes.extend(analysis.notes)
        segments = activity.segments(analysis, self.settings)
        # Planned with the longest prompt any segment gets (times up to the recording's length).
        longest = activity.Span(analysis.duration, analysis.duration)
        plan = self.describer.plan(self._segment_prompt(analysis, longest),
                                   self.options.frames or self.config.describe.frames, self.max_new_tokens,
                                   Kind.VIDEO)
        if self.hooks.on_plan:
            self.hooks.on_plan(plan)
        events = [self._segment(analysis, seg, plan, k, len(segments)) for k, seg in enumerate(segments)]
        text = self._summary(analysis, events) if events else self._quiet(analysis)
        self.totals.timings["describe"] = round(time.perf_counter() - started, 4)
        frames = [f for e in events for f in e.frames]
        small = self.thumbnails if self.thumbnails is not None and len(self.thumbnails) == len(frames) else []
        return Result(inputs=[self.path], kind=Kind.VIDEO, frames=frames, prompt=self.prompt, thumbnails=small,
                      model=self.describer.model_info(), tokens=self.totals.tokens(),
                      frames_capped_by_budget=plan.capped, timings=Timings(self.totals.timings),
                      text=None if self.describer.dry_run else text, notes=self.notes,
                      plan={**plan.as_dict(), "mode": "timeline", "activity": analysis.figures(),
                            "segments": [[s.start, s.end] for s in segments]},
                      events=events)

    # ---------------------------------------------------------------------------------- segments

    def _segment(self, analysis, segment: activity.Span, plan, k: int, n: int) -> Event:
        self.hooks.stage("segment", k + 1, n)
        done = self.kept.get((round(segment.start, 3), round(segment.end, 3)))
        if done is not None:
            frames = list(done.get("frames") or [])
            self._thumbnails_again(frames)
            return Event(segment.start, segment.end, done["text"], frames, segment.score)
        times = activity.pick_times(analysis, segment, plan.frames, self.settings.min_frame_gap)
        notes: list = []
        stream = media.sample_at(self.path, times, "exact", notes)     # the moments picked, not keyframes near them
        if self.describer.dry_run:
            frames, text = [frame_info(f) for f in stream], ""
        else:
            picked, text, tokens, timings = self.describer.caption(
                stream, self._segment_prompt(analysis, segment), plan, self.hooks.on_text, self.hooks.on_frame)
            frames = [frame_info(f) for f in picked]
            self.totals.add(tokens, timings)
            self.caption_tokens[(segment.start, segment.end)] = tokens.new
            if self.thumbnails is not None:
                self.thumbnails += [media.thumbnail(f.image) for f in picked]
        self.notes.extend(f"{activity.clock(segment.start)}–{activity.clock(segment.end)}: {note}" for note in notes)
        event = Event(segment.start, segment.end, (text or "").strip(), frames, segment.score)
        if self.hooks.on_event and not self.describer.dry_run:
            self.hooks.on_event(event)
        return event

    def _thumbnails_again(self, frames: list) -> None:
        """Thumbnails of a kept moment's frames, decoded again at their times (its images were not kept)."""
        if self.thumbnails is None or not frames:
            return
        again = list(media.sample_at(self.path, [f["seconds"] for f in frames], "exact"))
        if len(again) == len(frames):
            self.thumbnails += [media.thumbnail(f.image) for f in again]
        else:
            self.thumbnails = None      # they would no longer line up with the frames: keep none

    def _segment_prompt(self, analysis, segment: activity.Span) -> str:
        return (f"These frames are from {activity.clock(segment.start)} to {activity.clock(segment.end)} of a "
                f"{activity.clock(analysis.duration)} recording; their times are given from its start. "
                f"{self.prompt}")

    # ---------------------------------------------------------------------------------- summary

    def _quiet(self, analysis) -> str:
        return (f"No activity over the whole recording ({activity.clock(analysis.duration)}): "
                f"{analysis.summary()}.")

    def _summary(self, analysis, events: list) -> str:
        """One text over the captions: the caption itself for a single moment, else ``summarise``."""
        if len(events) == 1 or self.describer.dry_run:
            return events[0].text if len(events) == 1 else ""
        self.hooks.stage("summary", 1, 1)
        lines = [Line(e.start, e.end, e.text, self.caption_tokens.get((e.start, e.end))) for e in events]
        summary = summarise(self.describer, lines, analysis.duration, self.settings.summary_prompt,
                            self.max_new_tokens, self.hooks.on_text)
        for tokens, timings in summary.requests:
            self.totals.add(tokens, timings)
        self.totals.timings["summary"] = round(sum(sum(t.values()) for _, t in summary.requests), 4)
        self.notes.extend(summary.notes)
        return summary.text


@dataclass
class Line:
    """A caption with its span, and its length in tokens when the model said it (None: unknown)."""
    start: float
    end: float
    text: str
    tokens: int | None = None


@dataclass
class Summary:
    text: str
    requests: list        # [(Tokens, timings)] per request without images
    notes: list


def summarise(describer, lines: list, duration: float, ask: str, max_new_tokens: int,
              on_text: OnText | None = None) -> Summary:
    """The recording's summary from its captions with one request without images; captions that do
    not fit one context are summarised in groups first (and again, until they fit).

    Lengths are counted as the model's own token counts where known (a caption is what it generated)
    and as bytes otherwise (the estimate that errs high), so the usual handful of captions fits one
    request on a board with no tokenizer to count them."""
    head = f"Descriptions of the moments where something happens in a {activity.clock(duration)} recording, " \
           f"with their times:"
    room, requests, rounds, shortened = describer.text_room(max_new_tokens), [], 0, False
    while _cost(head, lines, ask) > room:
        grouped = _grouped(describer, head, lines, room, max_new_tokens, requests)
        if len(grouped) < len(lines):
            lines, rounds = grouped, rounds + 1
        else:       # no two lines fit together: shorten them all, then group again
            lines, shortened = [_shortened(line) for line in lines], True
    text, tokens, timings = describer.write(_listing(head, lines, ask), max_new_tokens, on_text,
                                            text_tokens=_cost(head, lines, ask))
    requests.append((tokens, timings))
    notes = [f"summary written in {rounds + 1} rounds: the captions did not fit one context"] if rounds else []
    if shortened:
        notes.append("captions shortened to fit the summary's context")
    return Summary(text.strip(), requests, notes)


def _grouped(describer, head: str, lines: list, room: int, max_new_tokens: int, requests: list) -> list:
    """Lines summarised in consecutive groups, each as large as fits one context."""
    groups: list = [[]]
    for line in lines:
        if groups[-1] and _cost(head, groups[-1] + [line], GROUP_PROMPT) > room:
            groups.append([])
        groups[-1].append(line)
    out = []
    for group in groups:
        if len(group) == 1:
            out.append(group[0])
            continue
        text, tokens, timings = describer.write(_listing(head, group, GROUP_PROMPT), max_new_tokens,
                                                text_tokens=_cost(head, group, GROUP_PROMPT))
        requests.append((tokens, timings))
        out.append(Line(group[0].start, group[-1].end, text.strip(), tokens.new or None))
    return out


def _listing(head: str, lines: list, ask: str) -> str:
    body = "\n".join(f"{_span(line)}{line.text}" for line in lines)
    return f"{head}\n{body}\n\n{ask}"


def _span(line: Line) -> str:
    return f"{activity.clock(line.start)}–{activity.clock(line.end)}: "


def _cost(head: str, lines: list, ask: str) -> int:
    """An upper bound on the tokens of ``_listing``: the model's count for its own words (plus two for
    how the text around them may join), the byte count for everything else."""
    words = sum(line.tokens + 2 if line.tokens else budget.estimate_tokens(line.text) for line in lines)
    return budget.estimate_tokens(head, ask, "\n\n") + sum(budget.estimate_tokens(_span(line), "\n")
                                                            for line in lines) + words


def _shortened(line: Line) -> Line:
    """A caption cut to three quarters of its words (its token count is unknown then)."""
    words = line.text.rstrip(" …").split()
    return Line(line.start, line.end, " ".join(words[:len(words) * 3 // 4]) + " …")
