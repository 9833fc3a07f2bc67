"""Webhooks: each message POSTed as JSON, signed with HMAC-SHA256, to every configured URL.

Why sign ``timestamp.body``: a receiver that knows the secret can check that
the body came from rkvideo unchanged (``X-Rkvideo-Signature: sha256=<hex>``)
and that it is recent (``X-Rkvideo-Timestamp``, Unix seconds, part of what is
signed so it cannot be replaced), which stops an old request being replayed.
``verify`` is the receiver's side, for Python receivers and the tests; the
README shows the steps. ``X-Rkvideo-Id`` repeats the message id: a retried
message has the same one.

Any answer other than 2xx is a failure and the message is tried again after
the back-off; a redirect is a failure too (a POST body must not be sent on
to a place the configuration does not name).
"""
from __future__ import annotations

import hashlib
import hmac
import time
import urllib.error
import urllib.request

from .. import __version__
from ..errors import RuntimeFailure
from .targets import Webhook

SIGNATURE, TIMESTAMP, MESSAGE = "X-Rkvideo-Signature", "X-Rkvideo-Timestamp", "X-Rkvideo-Id"
TOLERANCE = 300         # seconds a receiver should accept between the timestamp and its clock


class Failed(RuntimeFailure):
    """The web server did not take the message: try again later."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
           tolerance: float = TOLERANCE) -> bool:
    """The receiver's check: the signature matches and the timestamp is within ``tolerance`` seconds."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None     # urllib then raises HTTPError with the 3xx status


OPENER = urllib.request.build_opener(NoRedirect)


def post(hook: Webhook, message: str, payload: str, timeout: float) -> None:
    """POST one message; raises ``Failed`` unless the server answers 2xx."""
    body = payload.encode()
    stamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": f"rkvideo/{__version__}", MESSAGE: message,
               TIMESTAMP: stamp}
    if hook.secret:
        headers[SIGNATURE] = sign(hook.secret, stamp, body)
    request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
    try:
        with OPENER.open(request, timeout=timeout) as answer:
            answer.read(65536)
    except urllib.error.HTTPError as exc:
        raise Failed(f"{hook.shown}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise Failed(f"{hook.shown}: {_reason(exc.reason)}") from None
    except OSError as exc:
        raise Failed(f"{hook.shown}: {_reason(exc)}") from None


def _reason(reason) -> str:
    if isinstance(reason, TimeoutError):
        return "no answer in time"
    return getattr(reason, "strerror", None) or str(reason)
