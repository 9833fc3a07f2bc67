"""Listening: which addresses need a token, the socket, and uvicorn running the application.

Why the socket is bound here, before uvicorn starts: a port in use or an address
this machine does not have must be one line naming the address and the fix
(uvicorn would log it and leave the process itself), and ``port = 0`` must give
back the port it picked, so the command can print the URL.
"""
from __future__ import annotations

import ipaddress
import socket

import uvicorn

from ..errors import RuntimeFailure, UsageError

MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host``: localhost, 127.0.0.0/8, ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(host: str, token: str, where: str = "the config") -> None:
    """Refuse to serve other machines without a token, and a token that is easy to guess."""
    if token and len(token) < MIN_TOKEN:
        raise UsageError(f"serve.token in {where} is too short ({len(token)} characters; use at least {MIN_TOKEN}, "
                         f"e.g. what `openssl rand -base64 24` prints)")
    if not token and not is_loopback(host):
        raise UsageError(f"serving on {host} lets other machines in: set serve.token in {where} (they log in with "
                         f"it), or serve on 127.0.0.1")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0 = a free port)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UsageError(f"serve.host {host!r}: not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise RuntimeFailure(f"{host}:{port}: cannot listen: {exc.strerror} (another server on this port? pass "
                             f"--port, or set serve.port)") from None
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until SIGINT or SIGTERM (requests in flight are finished first)."""
    config = uvicorn.Config(app, log_level="info", proxy_headers=False, server_header=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
