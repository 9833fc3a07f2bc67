"""``rkvideo models``: the model profiles rkvideo knows, as a table or JSON.

Why a command: a user converting or downloading a model needs the facts the
pipeline assumes (input size, tokens per image, embedding width, tags) and
which of them are unverified, before the first run fails on a shape.
"""
from __future__ import annotations

import json

import click

from .. import models
from ..output import terminal
from .common import CONTEXT, json_option

EPILOG = """\b
Examples:
  rkvideo models
  rkvideo models --json | jq '.[] | select(.family == "qwen3-vl")'"""


@click.command("models", context_settings=CONTEXT, epilog=EPILOG, short_help="list the supported model profiles")
@json_option("a JSON array")
def command(as_json):
    """List the model profiles rkvideo knows: encoder input, tokens per image, embedding width, encoder
    outputs, where normalisation happens, the oldest RKLLM runtime the family's conversions need, and
    the image tags. Facts marked * are UNVERIFIED and can be overridden in the [model] section of
    config.toml; the notes under the table say where each figure comes from."""
    profiles = list(models.PROFILES.values())
    if as_json:
        print(json.dumps([models.as_dict(p) for p in profiles], indent=2, ensure_ascii=False))
    else:
        print(terminal.models(profiles, models.FAMILY_NOTES))
