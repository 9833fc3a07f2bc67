"""``rkvideo serve``: the web page over the database, in the foreground.

Why the checks happen here, before anything listens: an address other machines
can reach without a token, a short token, a port out of range or a missing
``[web]`` extra are mistakes in what was asked (status 2); a database that is
not there yet or a port in use are conditions that may pass (status 1, so a
systemd unit started before the daemon has made the database tries again).
"""
from __future__ import annotations

import sys

import click

from .. import errors
from ..config import hide_password
from .common import CONTEXT, config_option, database as database_of, db_option, load_config
from .watch import setup_logging

EPILOG = """\b
Examples:
  rkvideo serve                                  http://127.0.0.1:8765/ over the daemon's database
  rkvideo serve --db /var/lib/rkvideo/rkvideo.db --port 8080
  rkvideo serve --host 0.0.0.0 --config /etc/rkvideo/config.toml    the LAN: needs serve.token

\b
Pages: / (search; no words = newest recordings), /recordings/ID (watch it with its captions),
/jobs (counts, failed jobs, Retry). JSON: /api/search?q=WORDS, /api/recordings/ID, /api/jobs,
/healthz. Settings: [serve] host, port, token. Needs the [web] extra: pip install 'rkvideo[web]'."""


@click.command("serve", context_settings=CONTEXT, epilog=EPILOG,
               short_help="web page: search, watch a moment, retry failed jobs")
@db_option()
@click.option("--host", metavar="ADDRESS", help="listen on this address (default: serve.host, 127.0.0.1; any "
                                                "other needs serve.token)")
@click.option("--port", type=int, metavar="N", help="listen on this port (default: serve.port, 8765; 0 = any free "
                                                    "port)")
@config_option
def command(db, host, port, config):
    """Serve a web page over the database that `rkvideo watch` fills: search the descriptions and moments,
    see the frames the model saw, watch a recording from a moment with its captions, and retry failed
    jobs. Runs in the foreground until Ctrl-C or SIGTERM; prints the address it listens on."""
    cfg = load_config(config)
    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    if not 0 <= port <= 65535:
        raise errors.UsageError(f"--port must be 0-65535, got {port}")
    try:
        from .. import web
    except ImportError as exc:
        raise errors.UsageError(f"rkvideo serve needs the [web] extra ({exc.name} is not installed): "
                                f"pip install 'rkvideo[web]'") from None
    web.check(host, cfg.serve.token, str(cfg.source or "the config"))
    database = database_of(db, config)
    app = web.create_app(database, cfg.serve.token, cfg.roots())      # StoreError (no database yet): status 1
    sock = web.listen(host, port)
    print(f"rkvideo: serving {hide_password(str(database))} at {web.url(sock)}", file=sys.stderr, flush=True)
    setup_logging(False)
    web.run(app, sock)
