"""``rkvideo describe``: one request per video, or a set of images as one request.

Why the command keeps going after a bad input: a batch (``samples/*.mp4``)
should describe every file it can; each failure is one line on stderr and the
exit status is the worst seen (2 for bad input, 1 for a runtime failure). A
stop (Ctrl-C, SIGTERM) ends the whole command: the next input must not start.
Text is streamed to stdout as it is generated; a timeline (``--timeline``, or
``describe.mode``) prints each moment as it is finished, then the summary.
Progress goes to stderr only when a person is watching, so ``--json`` output
stays clean for scripts.
"""
from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from .. import activity, config as config_mod, errors, media, pipeline, printable, store, timeline
from ..output import sidecars, terminal
from .common import (CONTEXT, OutputError, config_option, db_option, error, json_option, load_config, print_json,
                     stage_messages, target, warn)

EPILOG = """\b
Examples:
  rkvideo describe clip.mp4                       8 frames, default prompt, text to stdout
  rkvideo describe clip.mp4 --frames 12 --prompt "Who enters the room?"
  rkvideo describe a.jpg b.jpg c.jpg              one request over three images
  rkvideo describe *.jpg --each                   one request per image
  rkvideo describe samples/*.mp4 --dry-run --json plan only: frames, timestamps, token budget
  rkvideo describe clip.mp4 --json | jq .text     JSON Lines for scripts
  rkvideo describe clip.mp4 --db rkvideo.db       also store the result (rkvideo search/show)
  rkvideo describe clip.mp4 --sidecars txt,vtt    also write clip.mp4.txt and clip.mp4.vtt
  rkvideo describe long.mp4 --timeline            the moments where something happens, then a summary
  rkvideo describe long.mp4 --timeline --dry-run  the moments found and the frames each would get
  rkvideo describe clip.mp4 --frames-by activity  one caption, frames where things change

\b
With --json each result is one line: inputs, kind, frames (index, pts, seconds), prompt, model,
tokens (prompt/vision/new), frames_capped_by_budget, timings (seconds per stage), text (null in
dry runs), notes and plan; a timeline adds events (start, end, text, frames, score) and its text is
the summary. --frames above the context budget is capped with a warning."""


@click.command("describe", context_settings=CONTEXT, epilog=EPILOG,
               short_help="describe videos or a set of images")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--frames", "-n", type=int, metavar="N", help="frames per video (default: describe.frames)")
@click.option("--prompt", "-p", metavar="TEXT",
              help="question to ask, as plain text: tags in it stay text (default: describe.prompt)")
@click.option("--max-new-tokens", type=int, metavar="N", help="generation limit (default: llm.max_new_tokens)")
@click.option("--seek", type=click.Choice(["fast", "exact"]), help="frame picking (default: describe.seek)")
@click.option("--timeline/--clip", "timeline_mode", default=None,
              help="videos: describe the moments where something happens and summarise them, or one caption "
                   "for the whole clip (default: describe.mode; \"auto\" picks by timeline.min_duration)")
@click.option("--frames-by", type=click.Choice(["uniform", "activity"]),
              help="clip mode: frames evenly spaced or where things change (default: describe.frames_by)")
@click.option("--each", is_flag=True, help="describe images one by one instead of as one set")
@click.option("--dry-run", is_flag=True, help="decode and plan, stop before the vision encoder; needs no model files")
@json_option("one JSON object per result (JSON Lines)")
@db_option("also store each result in this database (rkvideo list/search/show)")
@click.option("--sidecars", "sidecar_list", metavar="KINDS",
              help="also write these sidecar files beside each input, as `rkvideo watch` does: a comma-separated "
                   "list of txt, json, vtt (under output.dir when it is set)")
@config_option
def command(inputs, frames, prompt, max_new_tokens, seek, timeline_mode, frames_by, each, dry_run, as_json, db,
            sidecar_list, config):
    """Describe each video with ONE generation over N evenly spaced frames, or a set of images as ONE
    multi-image request. Video and image files are told apart by their suffix."""
    cfg = load_config(config)
    if frames is not None and frames < 1:
        raise errors.UsageError(f"--frames must be at least 1, got {frames}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise errors.UsageError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if prompt is not None and not prompt.strip():
        raise errors.UsageError("--prompt is empty: give the question, or leave --prompt out to ask "
                                "describe.prompt (describe.image_prompt for images)")
    kinds = sidecar_kinds(sidecar_list)
    requests = plan_requests(inputs, each)
    if kinds and any(len(paths) > 1 for _, paths in requests):
        raise errors.UsageError("--sidecars writes one set of files per input: add --each to describe the "
                                "images one by one")
    mode = None if timeline_mode is None else ("timeline" if timeline_mode else "clip")
    options = Options(frames, prompt, max_new_tokens, seek, dry_run, as_json, db, kinds, mode, frames_by)
    if db and (config_mod.is_url(db) or Path(db).expanduser().exists()):
        check_database(target(db), cfg)
    with stage_messages():
        describer = load(cfg, dry_run)
        progress = Progress(sys.stderr.isatty() and not as_json)
        worst = errors.EXIT_OK
        with describer, stop_on_signals(describer):
            for kind, paths in requests:
                worst = max(worst, describe_one(describer, cfg, kind, paths, options, progress))
    return worst


def load(cfg, dry_run: bool):
    """The describer with its runtimes loaded; a runtime library's own error is a runtime failure."""
    try:
        return pipeline.Describer(cfg, dry_run=dry_run)
    except errors.RkvideoError:
        raise
    except RuntimeError as exc:
        raise errors.RuntimeFailure(str(exc)) from None


@dataclass
class Options:
    """The per-request settings of one ``describe`` run."""
    frames: int | None
    prompt: str | None
    max_new_tokens: int | None
    seek: str | None
    dry_run: bool
    as_json: bool
    db: str | None
    sidecars: list
    mode: str | None = None           # "clip", "timeline" or None (describe.mode)
    frames_by: str | None = None

    def for_timeline(self, mode: str, thumbnails: bool) -> timeline.Options:
        return timeline.Options(mode=mode, frames=self.frames, prompt=self.prompt,
                                max_new_tokens=self.max_new_tokens, seek=self.seek, frames_by=self.frames_by,
                                thumbnails=thumbnails)


def sidecar_kinds(value: str | None) -> list:
    """``txt,json,vtt`` → a list in the order given; an unknown kind is a usage error."""
    if not value:
        return []
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in config_mod.SIDECARS]
    if unknown or not kinds:
        raise errors.UsageError(f"--sidecars: unknown kind {(unknown or [value])[0]!r} "
                                f"(known: {', '.join(config_mod.SIDECARS)})")
    return list(dict.fromkeys(kinds))


def split_inputs(paths) -> tuple[list, list]:
    """Videos and images by suffix; anything else is a usage error."""
    videos, images = [], []
    for raw in paths:
        suffix = Path(raw).suffix.lower()
        if suffix in media.IMAGE_SUFFIXES:
            images.append(raw)
        elif suffix in media.VIDEO_SUFFIXES:
            videos.append(raw)
        else:
            raise errors.UsageError(f"{raw}: not a video or image file name (videos: "
                                    f"{' '.join(media.VIDEO_SUFFIXES)}; images: {' '.join(media.IMAGE_SUFFIXES)})")
    return videos, images


def plan_requests(paths, each: bool) -> list:
    """``[(kind, [paths])]``: one request per video, the images as one set (or one each)."""
    videos, images = split_inputs(paths)
    requests = [(pipeline.Kind.VIDEO, [v]) for v in videos]
    if images:
        requests += [(pipeline.Kind.IMAGES, [i]) for i in images] if each else [(pipeline.Kind.IMAGES, images)]
    return requests


def describe_one(describer, cfg, kind: pipeline.Kind, paths: list, options: Options, progress: Progress) -> int:
    """One request (or one timeline): its result on stdout, its failure as one line on stderr; returns
    the status."""
    label = paths[0] if len(paths) == 1 else f"{len(paths)} images"
    human = not options.as_json and not options.dry_run
    planned = []
    # Thumbnails of the frames the model saw are stored with the description, for `rkvideo serve`.
    thumbnails = bool(options.db and cfg.output.thumbnails)
    try:
        mode = timeline.mode_for(describer, paths[0], options.mode) if kind is pipeline.Kind.VIDEO else "clip"
        # A timeline prints each moment as it is finished; one caption streams its text.
        stream_text = human and mode == "clip"
        hooks = timeline.Hooks(on_text=echo if stream_text else None, on_plan=planned.append,
                               on_frame=lambda f: progress.frame(label, f, planned[0].frames),
                               on_stage=lambda name, done, total: progress.stage(label, name, done, total),
                               on_event=(lambda e: progress.line(terminal.moment(e.as_json()))) if human else None)
        if kind is pipeline.Kind.VIDEO:
            result = timeline.describe(describer, paths[0], options.for_timeline(mode, thumbnails), hooks)
        else:
            result = describer.describe_images(paths, prompt=options.prompt, max_new_tokens=options.max_new_tokens,
                                               on_text=hooks.on_text, on_plan=hooks.on_plan, on_frame=hooks.on_frame,
                                               thumbnails=thumbnails)
    except (KeyboardInterrupt, errors.Interrupted):
        progress.done()
        raise KeyboardInterrupt from None      # stop the whole command (common.Group says "interrupted")
    except OutputError:
        progress.done()
        raise                                  # stdout is gone: no later input can be shown either
    except (errors.RkvideoError, RuntimeError) as exc:
        progress.done()
        # A usage error names its file already; a runtime failure gets the input in front.
        error(str(exc) if isinstance(exc, errors.UsageError) else f"{label}: {exc}")
        return errors.exit_code(exc)
    progress.done()
    for note in result.notes:
        warn(f"{label}: {note}")
    show(result, options.as_json, stream_text)
    return keep(result, cfg, options)


def show(result, as_json: bool, streamed: bool) -> None:
    if as_json:
        print_json(result.as_json())
    elif result.text is None:
        print(terminal.timeline_plan(result) if result.plan.get("mode") == "timeline" else terminal.plan(result))
    else:
        if result.events:
            print()                                 # the moments were printed as they finished
        print("" if streamed else printable.block(result.text))     # after streamed text: just end its line
        print(terminal.usage(result), file=sys.stderr)


def keep(result, cfg, options: Options) -> int:
    """Write the result's sidecars (``--sidecars``) and store it (``--db``); dry runs keep nothing. A
    failure is one line on stderr and this input's status; the next input still runs."""
    if result.text is None:
        return errors.EXIT_OK
    try:
        if options.sidecars:
            write_sidecars(result, cfg, options.sidecars)
        if options.db:
            save(target(options.db), result, cfg)
    except errors.RkvideoError as exc:
        error(str(exc))
        return errors.exit_code(exc)
    return errors.EXIT_OK


def check_database(db: Path | str, cfg) -> None:
    """A ``--db`` that is not rkvideo's (or cannot be opened) is refused before anything is described:
    status 2, pass another --db. A new or empty file (or database) becomes an rkvideo database. One
    locked by another process or on a full disk is status 1 (``StoreUnavailable``): that passes."""
    try:
        store.open_store(db, roots=cfg.roots()).close()
    except store.StoreUnavailable:
        raise
    except store.StoreError as exc:
        raise errors.UsageError(str(exc)) from None


def save(db: Path | str, result, cfg) -> None:
    """One result into the database (created if missing), as its job's description."""
    jobs = store.open_store(db, roots=cfg.roots())
    try:
        jobs.save_result(result)
    finally:
        jobs.close()


def write_sidecars(result, cfg, kinds: list) -> None:
    """The files the daemon writes beside a recording, for this one input."""
    path = result.inputs[0]
    duration = media.probe(path).duration if result.kind is pipeline.Kind.VIDEO else None
    out_dir = cfg.resolve_path(cfg.output.dir) if cfg.output.dir else None
    failed = [s for s in sidecars.write_each(path, result.as_json(), duration, kinds, out_dir) if s.error]
    if failed:     # the other kinds are written
        raise errors.RuntimeFailure("; ".join(f"{path}: {s.kind} sidecar not written: {s.error}" for s in failed))


def echo(text: str) -> None:
    """Generated text as it arrives (tests replace this to act in the middle of a generation)."""
    sys.stdout.write(printable.block(text))
    sys.stdout.flush()


class Progress:
    """Status lines on stderr, only when a person is watching."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def frame(self, label: str, frame, total: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{printable.line(label)}: frame {frame.index + 1}/{total} at {frame.seconds:.1f}s   ")
            sys.stderr.flush()

    def stage(self, label: str, name: str, done: float, total: float | None) -> None:
        """A timeline's progress: the analysis (seconds read), then moment k of n, then the summary."""
        if not self.enabled:
            return
        if name == "analysis":
            part = f"{100 * done / total:.0f}%" if total else activity.clock(done)
            sys.stderr.write(f"\r\033[K{label}: looking for activity, {part}")
        elif name == "segment":
            sys.stderr.write(f"\r\033[K{label}: moment {done:.0f} of {total:.0f}")
        else:
            sys.stderr.write(f"\r\033[K{label}: writing the summary")
        sys.stderr.flush()

    def line(self, text: str) -> None:
        """A line of output (a finished moment) on stdout, under the progress line."""
        self.done()
        print(text, flush=True)

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


class stop_on_signals:
    """SIGTERM behaves like Ctrl-C: abort the running generation, then unwind."""

    def __init__(self, describer):
        self.describer = describer
        self.previous = None

    def _handler(self, signum, frame):
        self.describer.abort()
        raise KeyboardInterrupt

    def __enter__(self):
        self.previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.previous)
