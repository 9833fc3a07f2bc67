"""``rkvideo selftest``: build the tiny models, describe a clip and two images, print PASS or FAIL.

Why FAIL is an exit status and a missing extra an error: a FAIL report is the
self-test's finding (it is printed in full); without the ``[cpu]`` extra there
is nothing to report, only the one line that says what to install.
"""
from __future__ import annotations

from pathlib import Path

import click

from .. import errors, selftest
from ..output import terminal
from .common import CONTEXT, json_option, print_json, stage_messages

EPILOG = """\b
Examples:
  rkvideo selftest                          build in a temporary directory, print PASS/FAIL
  rkvideo selftest --workdir st             keep the models, config and media in ./st
  rkvideo describe st/clip.mp4 --config st/config.toml --json
  rkvideo selftest --json | jq .pass"""


@click.command("selftest", context_settings=CONTEXT, epilog=EPILOG,
               short_help="run the whole pipeline on tiny generated models (needs the [cpu] extra)")
@click.option("--workdir", metavar="DIR",
              help="build in DIR and keep the files (default: a temporary directory, removed afterwards)")
@json_option("the report as one JSON object")
def command(workdir, as_json):
    """Build a tiny random-weight ONNX vision encoder and GGUF LLM (shaped like Qwen2-VL), write a
    config.toml for them, generate a clip and two images, and describe them through the real pipeline:
    frame sampling, ONNX Runtime, the assembler and llama.cpp. Prints PASS or FAIL with per-stage
    timings. Nothing is downloaded. The generated text is meaningless by design: the weights are random."""
    if workdir:
        make_workdir(workdir)
    with stage_messages():
        report = selftest.check(workdir)
    if as_json:
        print_json(report)
    else:
        print(terminal.selftest(report, workdir, selftest.STAGES))
    return errors.EXIT_OK if report["pass"] else errors.EXIT_RUNTIME


def make_workdir(workdir: str) -> None:
    """``--workdir``: a folder, made if missing; a file there, or a folder that cannot be made, is a
    usage error naming it (the self-test would only report it as a FAIL)."""
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise errors.UsageError(f"--workdir {workdir}: is a file, not a folder (give a folder to keep the "
                                f"self-test's files in, or a name that does not exist yet)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.UsageError(f"--workdir {workdir}: cannot make the folder: {exc.strerror}") from None
