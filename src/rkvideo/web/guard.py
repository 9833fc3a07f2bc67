"""Who may use the page, and the headers every answer carries: the one middleware in front of the routes.

Why a middleware and not a check in each route: a route added later cannot
forget it. What it does, per request:

* **Host**: without a token the server is for this machine only, so the
  ``Host`` header must name the loopback (``127.0.0.1``, ``localhost``,
  ``[::1]``, any port). A web page elsewhere that points its own name at
  127.0.0.1 (DNS rebinding) is refused instead of reading the recordings.
* **Token** (``serve.token``): every page but the login form, ``/static`` and
  ``/healthz`` needs either the session cookie the login form sets (an HMAC of
  the token, so changing the token logs everybody out) or an
  ``Authorization: Bearer TOKEN`` header (for scripts and ``/api``). Pages
  redirect to the login form; ``/api`` answers 401.
* **CSRF**: a random ``rkvideo_csrf`` cookie is set on the first visit and
  every form carries the same value (``request.state.csrf``); ``check_csrf``
  (called by every POST route) compares them, and also refuses a POST whose
  ``Origin`` is another site.
* **Headers**: a Content-Security-Policy that allows only our own script,
  styles, images and media (no inline script, so text from the database can
  never run even if escaping failed), ``nosniff``, no framing, and
  ``Server-Timing: app;dur=…`` (milliseconds in the server, read by
  ``benchmarks/web.py``).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import quote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse

SESSION_COOKIE = "rkvideo_session"
CSRF_COOKIE = "rkvideo_csrf"
CSRF_FIELD = "csrf"
SESSION_DAYS = 30
PUBLIC = ("/login", "/healthz", "/static/")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")

HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class Forbidden(Exception):
    """A POST without a matching CSRF token, or from another site."""


def session_value(token: str) -> str:
    """The session cookie for ``token``: proves the login without holding the token itself."""
    return hmac.new(token.encode(), b"rkvideo-session-1", hashlib.sha256).hexdigest()


def host_name(header: str) -> str:
    """``127.0.0.1:8765`` → ``127.0.0.1``; ``[::1]:80`` → ``::1``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: host check, token check, CSRF cookie, security and timing headers."""

    def __init__(self, app, token: str = ""):
        self.app = app
        self.token = token
        self.session = session_value(token) if token else ""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope)
        csrf = request.cookies.get(CSRF_COOKIE, "")
        fresh = not TOKEN_SHAPE.match(csrf)
        if fresh:
            csrf = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf"] = csrf

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.append("server-timing", f"app;dur={(time.perf_counter() - started) * 1000:.2f}")
                if fresh:
                    headers.append("set-cookie", f"{CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Lax")
            await send(message)

        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def refusal(self, request: Request):
        """The answer for a request that may not go on, or None."""
        path = request.url.path
        if not self.token and host_name(request.headers.get("host", "")) not in LOOPBACK:
            return JSONResponse({"error": "this server answers only to 127.0.0.1 and localhost (set serve.token "
                                          "to serve other hosts)"}, status_code=421)
        if not self.token or path.startswith(PUBLIC) or self.signed_in(request):
            return None
        if path.startswith("/api/"):
            return JSONResponse({"error": "log in: send Authorization: Bearer TOKEN"}, status_code=401,
                                headers={"www-authenticate": "Bearer"})
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    def signed_in(self, request: Request) -> bool:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and hmac.compare_digest(cookie, self.session):
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())


def check_csrf(request: Request, form) -> None:
    """Refuse a POST whose form token does not match its cookie, or that comes from another site."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("the form was sent from another site")
    sent, cookie = str(form.get(CSRF_FIELD, "")), request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        raise Forbidden("the form has expired or was not sent by this page; reload the page and try again")


def safe_next(target: str) -> str:
    """Where to go after logging in: a path on this server only (never ``//other.site`` or a URL)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
