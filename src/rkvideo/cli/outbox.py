"""``rkvideo outbox``: the notifications that wait for their broker or web server.

Why a command of its own: a message that did not arrive is either still
waiting (the broker is down, a webhook fails — the last error says why) or
was delivered; this shows which, read-only, beside a running daemon.
"""
from __future__ import annotations

import sys

import click

from ..output import terminal
from .common import CONTEXT, config_option, db_option, json_option
from .jobs import dump, open_db

EPILOG = """\b
Examples:
  rkvideo outbox                                what waits, oldest first, with the last error
  rkvideo outbox --json | jq -r '.[].payload | fromjson | .title'

\b
Settings: [notify] mqtt, webhooks, max_age (older messages are dropped), retry_backoff, retry_max."""


@click.command("outbox", context_settings=CONTEXT, epilog=EPILOG,
               short_help="show notifications waiting for delivery")
@json_option("a JSON array (each row with its payload)")
@db_option()
@config_option
def command(as_json, db, config):
    """Show the MQTT and webhook messages that `rkvideo watch` has not delivered yet: one row per message
    and target (an MQTT message once per topic), oldest first, with its tries and the last error. An
    empty outbox means everything was delivered."""
    with open_db(db, config) as jobs:
        rows, counts = jobs.outbox(), jobs.outbox_counts()
    if as_json:
        dump(rows)
        return
    if rows:
        print(terminal.outbox(rows))
    print(terminal.outbox_summary(counts), file=sys.stderr)
