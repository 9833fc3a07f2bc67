"""``rkvideo serve``: a web page over the database the daemon fills.

Search the recordings (moments and recordings best first, with the frames
the model saw), open one to watch it from the moment with its captions on,
see what failed and retry it; the same data as JSON under ``/api``.

Why a package beside the daemon, below the command line: it is a second
program over the same database (SQLite in WAL mode lets both run), started by
``rkvideo serve`` (``cli/serve.py``), and it needs the optional ``[web]``
extra (Starlette, Jinja2, uvicorn), which nothing else imports.

Modules: ``routes`` (the application, error pages, streaming), ``pages``
(what each page shows, as data shared by HTML and JSON), ``guard`` (host and
token checks, CSRF, security headers), ``captions`` (the WebVTT track from
the database), ``server`` (the socket and uvicorn); ``templates/`` and
``static/`` hold the HTML and our one script.
"""
from __future__ import annotations

from .routes import create_app
from .server import check, is_loopback, listen, run, url

__all__ = ["check", "create_app", "is_loopback", "listen", "run", "url"]
