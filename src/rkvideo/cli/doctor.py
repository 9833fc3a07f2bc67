"""``rkvideo doctor``: run the board checks and print them; status 1 when one FAILs.

Why a FAIL line is an exit status and not an error: the report is the
output (every line is useful, including the ones that passed), and scripts
and CI want one bit of it: ready or not.
"""
from __future__ import annotations

import json

import click

from .. import doctor, errors
from ..output import terminal
from .common import CONTEXT, config_option, json_option, stage_messages

EPILOG = """\b
Examples:
  rkvideo doctor
  sudo rkvideo doctor --config /etc/rkvideo/config.toml     root can read the NPU driver version
  rkvideo doctor --json | jq '.checks[] | select(.status != "OK")'"""


@click.command("doctor", context_settings=CONTEXT, epilog=EPILOG,
               short_help="check the RK3588 board setup (NPU driver, runtimes, models)")
@json_option("the checks as one JSON object")
@config_option
def command(as_json, config):
    """Check what the NPU path needs, one line each (OK / WARN / FAIL, with the fix):

    \b
    SoC and kernel, the NPU driver version (0.9.8 or newer; reading it may need root),
    /usr/lib/librknnrt.so, librkllmrt.so and its struct layout, the Python version against the
    rknn-toolkit-lite2 wheels (none for 3.13), rknn-toolkit-lite2, the RKLLM runtime against the
    model family's minimum, the configured model files against free memory and the NPU memory
    domain, the encoder's output shapes against the profile, and the CPU/NPU governors
    (performance, or userspace held at the maximum frequency).
    Exit status 0 only when nothing FAILs."""
    with stage_messages():
        report = doctor.examine(config)
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        print(terminal.doctor(report))
    return errors.EXIT_OK if report.ok else errors.EXIT_RUNTIME
