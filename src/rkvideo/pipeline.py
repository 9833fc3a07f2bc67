"""The one path every description takes: media → frames → vision → request → text.

The CLI and the daemon both go through ``Describer``: it loads the runtimes
once (the LLM first, then the encoders, as Rockchip's demos do so that the two
NPU memory domains are laid out predictably), plans the frame count against
the context budget, and runs one request at a time. It never knows which
runtime it drives: ``vision`` and ``llm`` choose them from the model files,
the vision runtime says whether it runs on the NPU (the LLM then takes the
other memory domain), and tests pass their own stages in or register their
own runtimes.

Timeline mode (``rkvideo.timeline``) drives the same loaded runtimes request by
request: ``caption`` for one segment's frames, ``write`` for a request without
images (the summary).

A result is typed (``Result`` with ``Kind``, ``Tokens``, ``Timings``) so its
readers cannot mistype a key; ``Result.as_json()`` is the one JSON shape of
``describe --json``, the sidecars and the database.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from . import activity, assemble, budget, media, modelfile, models, preprocess
from .config import Config
from .errors import UsageError
from .llm import open_llm
from .vision import open_pool, runtime_for


class SetupError(UsageError):
    """The configuration cannot work (missing model file, mismatched widths)."""


class Kind(str, Enum):
    """What one request describes: one video's frames, or a set of still images."""
    VIDEO = "video"
    IMAGES = "images"

    def __str__(self) -> str:      # "video" in messages and f-strings, as the plain string was
        return self.value


@dataclass(frozen=True)
class Tokens:
    """``prompt``: text tokens of the prefill (template, question, timestamps); ``vision``: image
    tokens with their tags; ``new``: generated. Dry runs report the planner's upper bound of ``prompt``."""
    prompt: int = 0
    vision: int = 0
    new: int = 0

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "vision": self.vision, "new": self.new}


class Timings(dict):
    """Seconds per stage (decode, preprocess, encode, vision, prefill, generate), JSON-ready."""


@dataclass
class Event:
    """A moment of a recording where something happens (timeline mode): ``start``/``end`` in seconds
    from the recording's start, the caption of that stretch, the frames the model saw for it, and
    the activity score that found it."""
    start: float
    end: float
    text: str
    frames: list[dict] = field(default_factory=list)     # [{index, pts, seconds, source}]
    score: float = 0.0

    def as_json(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text, "frames": self.frames,
                "score": self.score}


@dataclass
class Result:
    inputs: list[str]
    kind: Kind
    frames: list[dict]              # [{index, pts, seconds, source}]
    prompt: str
    model: dict                     # profile, vision, llm
    tokens: Tokens
    frames_capped_by_budget: bool
    timings: Timings
    text: str | None                # None in dry runs
    notes: list = field(default_factory=list)
    plan: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)     # timeline mode only; ``text`` is then the summary
    # Small JPEGs (bytes) of the frames the model saw, one per entry of ``frames``, when asked for
    # (``thumbnails=True``); the store keeps them for the web page. Not part of the JSON.
    thumbnails: list[bytes] = field(default_factory=list)

    def as_json(self) -> dict:
        shape = {"inputs": self.inputs, "kind": self.kind.value, "frames": self.frames, "prompt": self.prompt,
                 "model": self.model, "tokens": self.tokens.as_dict(),
                 "frames_capped_by_budget": self.frames_capped_by_budget, "timings": dict(self.timings),
                 "text": self.text, "notes": self.notes, "plan": self.plan}
        if self.events:
            shape["events"] = [event.as_json() for event in self.events]
        return shape


def model_file(config: Config, key: str) -> Path:
    """The configured model file for ``model.<key>``; an error names the key when it is unusable."""
    value = getattr(config.model, key)
    where = _where(config)
    if not value:
        raise SetupError(f"model.{key} is not set{where} (set it to the {_KINDS[key]} file, "
                         f"or run `rkvideo describe --dry-run` to plan without models)")
    path = config.resolve_path(value)
    # Missing, a folder, unreadable: a usage error naming the key and the config file. What is IN the
    # file is for its runtime to judge (modelfile.check, at load).
    modelfile.check_file(path, f"model.{key}{where}", f"the {_KINDS[key]} file")
    return path


def _where(config: Config) -> str:
    return f" in {config.source}" if config.source else ""


_KINDS = {"vision": "vision encoder (.rknn or .onnx)", "llm": "LLM (.rkllm or .gguf)"}

OnText = Callable[[str], None]
OnFrame = Callable[[media.Frame], None]
OnPlan = Callable[[budget.Plan], None]


class Describer:
    """Loaded runtimes and the settings to describe with; one request at a time."""

    def __init__(self, config: Config, *, dry_run: bool = False, vision=None, llm=None):
        self.config = config
        try:
            self.profile = models.resolve(config.model)
        except models.UnknownProfile as exc:
            raise SetupError(f"model.profile{_where(config)}: {exc}") from None
        self.dry_run = dry_run
        self.vision, self.llm = vision, llm
        self.load_seconds = 0.0
        if dry_run:
            return
        try:
            if vision is None or llm is None:
                self._load()
            self._check_widths()
        except BaseException:
            # Free whatever loaded (and its NPU memory) now, not at process exit.
            self.close()
            raise

    def _load(self) -> None:
        start = time.perf_counter()
        vision_path, llm_path = model_file(self.config, "vision"), model_file(self.config, "llm")
        runtime = runtime_for(vision_path)
        if self.llm is None:
            self.llm = open_llm(str(llm_path), self.config, self.profile, npu_vision=runtime.npu)
        if self.vision is None:
            self.vision = open_pool(str(vision_path), self.profile, self.config.vision.workers,
                                    self.config.vision.queue_size)
        self.load_seconds = time.perf_counter() - start

    def _check_widths(self) -> None:
        want = self.profile.encoder_width
        got_vision, got_llm = self.vision.output_width, self.llm.input_width
        if got_vision != want or got_llm != want:
            raise SetupError(
                f"embedding width mismatch: vision encoder {self.config.model.vision or '<encoder>'} gives "
                f"{got_vision} floats per token, LLM {self.config.model.llm or '<llm>'} takes {got_llm}, "
                f"profile {self.profile.name} says {want} (use the encoder and LLM from the same model "
                f"release, or fix model.embed_width / model.encoder_outputs)")

    def plan(self, prompt: str, frames: int, max_new_tokens: int, kind: Kind) -> budget.Plan:
        chat = self.profile.chat
        # The question as plain text, in the form the runtime that makes it longest is given (see assemble).
        prompt_tokens = budget.estimate_tokens(chat.system, chat.prefix, chat.postfix, assemble.inert(prompt))
        # Worst case per frame: its stamp text (long timestamps) and the line break.
        stamp = self.profile.stamp(999, 99999.9) if Kind(kind) is Kind.VIDEO else "Image 999: "
        frame_tokens = self.profile.frame_tokens() + budget.estimate_tokens(stamp, "\n")
        return budget.plan(frames, max_context=self.profile.max_context, prompt_tokens=prompt_tokens,
                           frame_tokens=frame_tokens, max_new_tokens=max_new_tokens,
                           reserve=self.config.llm.reserve)

    def describe_video(self, path, *, frames: int | None = None, prompt: str | None = None,
                       max_new_tokens: int | None = None, seek: str | None = None, frames_by: str | None = None,
                       on_text: OnText | None = None, on_frame: OnFrame | None = None,
                       on_plan: OnPlan | None = None, thumbnails: bool = False) -> Result:
        """Describe one video with one request: ``frames`` frames (capped by the budget), evenly spaced
        or, with ``frames_by = "activity"``, where things change (``describe.frames_by``).
        ``thumbnails``: also return a small JPEG of each frame the model saw (``Result.thumbnails``)."""
        cfg = self.config
        prompt = prompt or cfg.describe.prompt
        plan = self._plan(prompt, frames or cfg.describe.frames, max_new_tokens, Kind.VIDEO, on_plan)
        notes: list = []
        stream = self._clip_frames(str(path), plan.frames, seek or cfg.describe.seek,
                                   frames_by or cfg.describe.frames_by, notes)
        result = self._describe(Kind.VIDEO, [path], stream, prompt, plan, notes, on_text, on_frame, thumbnails)
        if not result.frames:
            raise media.MediaError(f"{path}: no frame could be decoded (check the file plays)")
        return result

    def _clip_frames(self, path: str, n: int, seek: str, frames_by: str, notes: list):
        """Evenly spaced frames, or the first frame and the rest where the activity analysis found
        things changing; evenly spaced again when it found nothing or could not run."""
        if frames_by == "activity" and n > 1:
            try:
                analysis = activity.analyse(path, self.config.timeline)
            except activity.AnalysisError as exc:
                notes.append(f"frames spread evenly: {exc}")
            else:
                notes.extend(analysis.notes)
                if analysis.spans:
                    whole = activity.Span(0.0, analysis.duration)
                    times = activity.pick_times(analysis, whole, n, self.config.timeline.min_frame_gap, first=0.0)
                    return media.sample_at(path, times, "exact", notes)
                notes.append("frames spread evenly: the activity analysis found no moment of activity")
        return media.sample(path, n, seek, notes)

    def caption(self, stream: Iterable[media.Frame], prompt: str, plan: budget.Plan, on_text: OnText | None = None,
                on_frame: OnFrame | None = None) -> tuple[list, str | None, Tokens, Timings]:
        """One request over the video frames of ``stream`` (one segment of a timeline): the frames used,
        the text, the token counts and the seconds per stage."""
        return self._run(stream, prompt, plan, Kind.VIDEO, on_text, on_frame)

    def write(self, text: str, max_new_tokens: int, on_text: OnText | None = None,
              text_tokens: int | None = None) -> tuple[str, Tokens, Timings]:
        """One request without images (a timeline's summary): its text, token counts and seconds.
        ``text_tokens``: an upper bound on the tokens of ``text``, when known better than its bytes."""
        request = assemble.build_text(self.profile, text, max_new_tokens=max_new_tokens,
                                      max_context=self.profile.max_context, reserve=self.config.llm.reserve,
                                      text_tokens=text_tokens)
        generation = self.llm.generate_text(request, on_text)
        tokens = Tokens(prompt=generation.prompt_tokens, new=generation.new_tokens)
        return generation.text, tokens, Timings({k: round(v, 4) for k, v in generation.timings.items()})

    def text_room(self, max_new_tokens: int) -> int:
        """How many tokens the text of a request without images may have (what ``write`` accepts)."""
        return assemble.text_room(self.profile, max_new_tokens=max_new_tokens, max_context=self.profile.max_context,
                                  reserve=self.config.llm.reserve)

    def describe_images(self, paths: list, *, prompt: str | None = None, max_new_tokens: int | None = None,
                        on_text: OnText | None = None, on_frame: OnFrame | None = None,
                        on_plan: OnPlan | None = None, thumbnails: bool = False) -> Result:
        """Describe a set of still images as one request (as many as the budget allows, in order)."""
        prompt = prompt or self.config.describe.image_prompt
        plan = self._plan(prompt, len(paths), max_new_tokens, Kind.IMAGES, on_plan)
        dropped = [str(p) for p in paths[plan.frames:]]
        notes = [f"{len(dropped)} of {len(paths)} images left out, the {plan.max_context}-token context holds "
                 f"{plan.frames}: {', '.join(dropped)}"] if dropped else []
        stream = media.load_images([str(p) for p in paths[:plan.frames]], side=self.profile.input_size,
                                   max_pixels=int(self.config.describe.max_image_megapixels * 1e6))
        return self._describe(Kind.IMAGES, paths, stream, prompt, plan, notes, on_text, on_frame, thumbnails)

    def _plan(self, prompt: str, wanted: int, max_new_tokens: int | None, kind: Kind, on_plan) -> budget.Plan:
        plan = self.plan(prompt, wanted, max_new_tokens or self.config.llm.max_new_tokens, kind)
        if on_plan:
            on_plan(plan)
        return plan

    def _describe(self, kind: Kind, inputs: list, stream: Iterable[media.Frame], prompt: str, plan: budget.Plan,
                  notes: list, on_text, on_frame, thumbnails: bool = False) -> Result:
        if plan.capped and kind is Kind.VIDEO:      # images: describe_images names those left out
            notes.append(f"{plan.requested} frames requested, {plan.frames} fit the "
                         f"{plan.max_context}-token context")
        if self.dry_run:
            picked, timings = self._dry(stream, on_frame)
            n, per_frame = len(picked), self.profile.frame_tokens()
            tokens = Tokens(prompt=plan.prompt_tokens + n * (plan.frame_tokens - per_frame), vision=n * per_frame)
            text = None
        else:
            picked, text, tokens, timings = self._run(stream, prompt, plan, kind, on_text, on_frame)
        # Made here, from the frames the encoders kept until now anyway: no full-size frame lives longer.
        small = [media.thumbnail(f.image) for f in picked] if thumbnails and not self.dry_run else []
        return Result(inputs=[str(p) for p in inputs], kind=kind, frames=[frame_info(f) for f in picked],
                      prompt=prompt, model=self.model_info(), tokens=tokens,
                      frames_capped_by_budget=plan.capped, timings=timings, text=text, notes=notes,
                      plan=plan.as_dict(), thumbnails=small)

    def _dry(self, stream, on_frame) -> tuple[list, Timings]:
        """Everything up to the encoder: decode and preprocess, keep nothing heavy."""
        picked, prep = [], 0.0
        start = time.perf_counter()
        for frame in stream:
            t0 = time.perf_counter()
            preprocess.for_profile(frame.image, self.profile)
            prep += time.perf_counter() - t0
            picked.append(frame)
            if on_frame:
                on_frame(frame)
        total = time.perf_counter() - start
        return picked, Timings(decode=round(total - prep, 4), preprocess=round(prep, 4))

    def _run(self, stream, prompt, plan, kind, on_text, on_frame) -> tuple[list, str | None, Tokens, Timings]:
        encoded = self.vision.encode(stream, on_frame)
        if not encoded.frames:      # nothing decoded: describe_video names the file (assemble would blame shapes)
            return [], None, Tokens(), Timings(encoded.timings)
        stamps = [f.seconds for f in encoded.frames] if kind is Kind.VIDEO else None
        request = assemble.build(self.profile, prompt, encoded.embeddings, stamps, rule=self.llm.placeholder_rule,
                                 max_new_tokens=plan.max_new_tokens, max_context=plan.max_context,
                                 reserve=plan.reserve)
        generation = self.llm.generate(request, on_text)
        timings = {**encoded.timings, **generation.timings}
        # Runtimes count the whole prefill; report text and vision apart so they add up.
        tokens = Tokens(prompt=max(generation.prompt_tokens - request.vision_tokens, 0),
                        vision=request.vision_tokens, new=generation.new_tokens)
        return encoded.frames, generation.text, tokens, Timings({k: round(v, 4) for k, v in timings.items()})

    def model_info(self) -> dict:
        return {"profile": self.profile.name, "vision": self.config.model.vision or None,
                "llm": self.config.model.llm or None}

    def abort(self) -> None:
        """Stop a running generation soon (it raises llm.Interrupted); safe from a signal handler."""
        if self.llm is not None:
            self.llm.abort()

    def close(self) -> None:
        # Encoders before the LLM: the reverse of loading.
        for part in (self.vision, self.llm):
            if part is not None:
                part.close()
        self.vision = self.llm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def frame_info(frame: media.Frame) -> dict:
    """A frame as results keep it: index, pts, seconds (3 decimals), source."""
    return {"index": frame.index, "pts": frame.pts, "seconds": round(frame.seconds, 3), "source": frame.source}
