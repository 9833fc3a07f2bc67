"""The ``rkvideo`` command line.

Every command documents itself with examples in ``--help``. Exit codes: 0
success, 1 a runtime failure, 2 bad usage or bad input. Errors are one line on
stderr naming the file and the fix; ``--json`` output goes to stdout only.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import __version__, config as config_mod, models, media

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rkvideo", formatter_class=_formatter,
        description="Turn video recordings and photos into searchable text with vision-language models "
                    "on Rockchip RK3588 NPUs (or any PC with ONNX + GGUF models).",
        epilog="Run `rkvideo COMMAND --help` for examples.")
    parser.add_argument("--version", action="version", version=f"rkvideo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _describe_parser(sub)
    _models_parser(sub)
    for add in EXTRA_PARSERS:
        add(sub)
    return parser


def _add_config(p) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="config file (default: $RKVIDEO_CONFIG, ./config.toml, ~/.config/rkvideo/config.toml, "
                        "/etc/rkvideo/config.toml)")


def _describe_parser(sub) -> None:
    p = sub.add_parser(
        "describe", formatter_class=_formatter, help="describe videos or a set of images",
        description="Describe each video with ONE generation over N evenly spaced frames, or a set of images "
                    "as ONE multi-image request.",
        epilog="""examples:
  rkvideo describe clip.mp4                       8 frames, default prompt, text to stdout
  rkvideo describe clip.mp4 --frames 12 --prompt "Who enters the room?"
  rkvideo describe a.jpg b.jpg c.jpg              one request over three images
  rkvideo describe *.jpg --each                   one request per image
  rkvideo describe samples/*.mp4 --dry-run --json plan only: frames, timestamps, token budget
  rkvideo describe clip.mp4 --json | jq .text     JSON Lines for scripts
  rkvideo describe clip.mp4 --db rkvideo.db       also store the result (rkvideo search/show)

With --json each result is one line: inputs, kind, frames (index, pts, seconds), prompt, model,
tokens (prompt/vision/new), frames_capped_by_budget, timings (seconds per stage), text (null in
dry runs), notes and plan. --frames above the context budget is capped with a warning.""")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files and/or image files")
    p.add_argument("--frames", "-n", type=int, metavar="N", help="frames per video (default: describe.frames)")
    p.add_argument("--prompt", "-p", metavar="TEXT", help="question to ask (default: describe.prompt)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="generation limit (default: llm.max_new_tokens)")
    p.add_argument("--seek", choices=("fast", "exact"), help="frame picking (default: describe.seek)")
    p.add_argument("--each", action="store_true", help="describe images one by one instead of as one set")
    p.add_argument("--dry-run", action="store_true",
                   help="decode and plan, stop before the vision encoder; needs no model files")
    p.add_argument("--json", action="store_true", help="print one JSON object per result (JSON Lines)")
    p.add_argument("--db", metavar="PATH", help="also store each result in this database (rkvideo list/search/show)")
    _add_config(p)
    p.set_defaults(func=cmd_describe)


def _models_parser(sub) -> None:
    p = sub.add_parser(
        "models", formatter_class=_formatter, help="list the supported model profiles",
        description="List the model profiles rkvideo knows: encoder input, tokens per image, embedding width, "
                    "encoder outputs, tags and where normalisation happens. Facts marked * are UNVERIFIED "
                    "and can be overridden in the [model] section of config.toml.",
        epilog="""examples:
  rkvideo models
  rkvideo models --json | jq '.[] | select(.family == "qwen3-vl")'""")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(func=cmd_models)


# Commands defined by other modules register their parsers here (see the bottom of this file).
EXTRA_PARSERS: list = []


def load_config(args):
    try:
        return config_mod.load(getattr(args, "config", None))
    except config_mod.ConfigError as exc:
        raise CLIError(str(exc)) from None


def split_inputs(paths: list) -> tuple[list, list]:
    """Videos and images by suffix; anything else is a usage error."""
    videos, images = [], []
    for raw in paths:
        suffix = Path(raw).suffix.lower()
        if suffix in media.IMAGE_SUFFIXES:
            images.append(raw)
        elif suffix in media.VIDEO_SUFFIXES:
            videos.append(raw)
        else:
            raise CLIError(f"{raw}: not a video or image file name (videos: {' '.join(media.VIDEO_SUFFIXES)}; "
                           f"images: {' '.join(media.IMAGE_SUFFIXES)})")
    return videos, images


def jobs_for(args) -> list:
    videos, images = split_inputs(args.inputs)
    jobs = [("video", [v]) for v in videos]
    if images:
        jobs += [("images", [i]) for i in images] if args.each else [("images", images)]
    return jobs


class Progress:
    """Status lines on stderr, only when a person is watching."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def frame(self, label: str, frame, total: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r{label}: frame {frame.index + 1}/{total} at {frame.seconds:.1f}s   ")
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def warn(message: str) -> None:
    print(f"rkvideo: warning: {message}", file=sys.stderr)


def error(message: str) -> None:
    print(f"rkvideo: error: {message}", file=sys.stderr)


def cmd_describe(args) -> int:
    from . import pipeline
    cfg = load_config(args)
    if args.frames is not None and args.frames < 1:
        raise CLIError(f"--frames must be at least 1, got {args.frames}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    jobs = jobs_for(args)
    try:
        describer = pipeline.Describer(cfg, dry_run=args.dry_run)
    except pipeline.SetupError as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:
        raise CLIError(str(exc), EXIT_RUNTIME) from None
    progress = Progress(sys.stderr.isatty() and not args.json)
    worst = EXIT_OK
    with describer, _stop_on_signals(describer):
        for kind, inputs in jobs:
            worst = max(worst, _describe_one(describer, kind, inputs, args, progress))
    return worst


def _describe_one(describer, kind: str, inputs: list, args, progress: Progress) -> int:
    from . import budget, llm, pipeline
    label = inputs[0] if len(inputs) == 1 else f"{len(inputs)} images"
    stream_text = not args.json and not args.dry_run
    planned = []
    try:
        result = describer.describe(
            inputs, kind=kind, frames=args.frames, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
            seek=args.seek, on_text=_echo if stream_text else None, on_plan=planned.append,
            on_frame=lambda f: progress.frame(label, f, planned[0].frames))
    except (media.MediaError, budget.BudgetError, pipeline.SetupError) as exc:
        progress.done()
        error(str(exc))
        return EXIT_USAGE
    except (KeyboardInterrupt, llm.Interrupted):
        # Stop the whole command: the next input must not start after Ctrl-C or SIGTERM.
        progress.done()
        raise KeyboardInterrupt from None
    except RuntimeError as exc:
        progress.done()
        error(f"{label}: {exc}")
        return EXIT_RUNTIME
    progress.done()
    for note in result.notes:
        warn(f"{label}: {note}")
    _print_result(result, args, stream_text)
    if getattr(args, "db", None) and result.text is not None:
        from . import store
        try:
            store.save_result(args.db, result)
        except store.StoreError as exc:
            error(str(exc))
            return EXIT_RUNTIME
    return EXIT_OK


def _echo(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _print_result(result, args, streamed: bool) -> None:
    if args.json:
        print(json.dumps(result.as_json(), ensure_ascii=False), flush=True)
    elif result.text is None:
        print(_plan_text(result))
    else:
        if not streamed:
            print(result.text)
        else:
            print()
        from .store import timings_text
        print(f"[{result.tokens['prompt']} prompt + {result.tokens['new']} new tokens; "
              f"{timings_text(result.timings)}]",
              file=sys.stderr)


def _plan_text(result) -> str:
    plan = result.plan
    lines = [f"{', '.join(result.inputs)}: {result.kind}, {len(result.frames)} frames "
             f"(budget allows {plan['max_frames']}{', capped' if result.frames_capped_by_budget else ''})"]
    for f in result.frames:
        pts = "" if f["pts"] is None else f" pts {f['pts']}"
        where = f" {Path(f['source']).name}" if result.kind == "images" else ""
        lines.append(f"  frame {f['index']:>3}  {f['seconds']:>9.3f}s{pts}{where}")
    lines.append(f"  tokens: prompt ≤{plan['prompt_tokens']} + vision {len(result.frames)}×{plan['tokens_per_frame']}"
                 f" + new {plan['max_new_tokens']} + reserve {plan['reserve']} of {plan['max_context']}")
    return "\n".join(lines)


class _stop_on_signals:
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


def cmd_models(args) -> int:
    profiles = list(models.PROFILES.values())
    if args.json:
        print(json.dumps([models.as_dict(p) for p in profiles], indent=2, ensure_ascii=False))
        return EXIT_OK
    header = ("profile", "input", "tokens", "width", "outputs", "normalize", "tags (start / content / end)")
    rows = [header]
    for p in profiles:
        mark = lambda field, value: f"{value}*" if field in p.unverified else str(value)  # noqa: E731
        tags = f"{p.img_start} / {p.img_content} / {p.img_end}"
        rows.append((p.name, mark("input_size", p.input_size), mark("tokens_per_image", p.tokens_per_image),
                     mark("embed_width", p.embed_width), str(p.encoder_outputs), p.normalize,
                     tags + ("*" if "img_start" in p.unverified else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    print("\n* UNVERIFIED: check against your model files; override in the [model] section of config.toml.")
    return EXIT_OK


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except CLIError as exc:
        error(str(exc))
        return exc.code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:
        return EXIT_OK


# Parsers of commands implemented in other modules. Each module owns its command:
# a function add_parser(sub) that calls sub.add_parser(...) and set_defaults(func=...).
def _register() -> None:
    import importlib
    for name in ("selftest", "doctor", "watch", "store"):
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ImportError as exc:
            if exc.name and exc.name.endswith(f"rkvideo.{name}"):
                continue  # module not written yet
            raise
        if hasattr(module, "add_parser"):
            EXTRA_PARSERS.append(module.add_parser)


_register()

if __name__ == "__main__":
    sys.exit(main())
