"""The web application: routes, error pages, and how each request reaches the database.

Why these rules:

* Each request opens the store and closes it when it is done (about a
  millisecond): no connection is tied to a thread of the server's pool, a
  database replaced under the server is simply opened again, and a database
  that cannot be opened is a 503 page, not a crash. The server never creates
  the database: it shows what the daemon writes.
* Recordings and thumbnails are looked up by their id in the database; no path
  from a request is ever opened. Videos are streamed by Starlette's
  ``FileResponse`` (Range requests: 206 with the asked bytes, 416 for a range
  past the end), 64 KiB at a time, never read whole.
* Templates are Jinja2 with autoescaping on for every template: every value
  from the database is text, never markup. The one exception, the snippet's
  highlights, goes through ``highlight``, which escapes first.
* Errors are pages (JSON under ``/api``), never tracebacks; unexpected ones are
  logged with their traceback for the operator.
"""
from __future__ import annotations

import contextlib
import hmac
import logging
import mimetypes
import os
import stat
from pathlib import Path

import anyio
import jinja2
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import store as store_mod
from ..config import is_url
from ..store import END, MARK, StoreError
from . import captions, guard, pages

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
THREADS = 8         # requests served at once (each opens its own database connection)


def highlight(text: str) -> Markup:
    """A snippet as HTML: the text escaped, then its match marks turned into ``<mark>``."""
    return Markup(str(escape(text or "")).replace(MARK, "<mark>").replace(END, "</mark>"))


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["highlight"] = highlight
    env.filters["clock"] = pages.clock
    return env


class Web:
    """The routes over one database; ``app`` is the ASGI application."""

    def __init__(self, database: str | os.PathLike, token: str = "", roots: dict | None = None):
        # A postgresql:// URL as it is; ``roots`` (name -> folder) give a shared database's recordings the
        # paths of this machine.
        self.database = database if is_url(database) else Path(database)
        self.roots = roots
        self.token = token
        self.env = templates()
        # Once, read-write: the database must exist, and an older schema gains what these pages read.
        store_mod.open_store(self.database, create=False, roots=roots).close()
        routes = [
            Route("/", self.search_page),
            Route("/recordings/{job_id:int}", self.recording_page),
            Route("/recordings/{job_id:int}/captions/{description_id:int}.vtt", self.captions),
            Route("/media/{job_id:int}", self.media, methods=["GET", "HEAD"]),
            Route("/thumbnails/{thumbnail_id:int}.jpg", self.thumbnail),
            Route("/thumbnails/{description_id:int}/{seq:int}.jpg", self.thumbnail_of),
            Route("/jobs", self.jobs_page),
            Route("/jobs/retry", self.retry, methods=["POST"]),
            Route("/jobs/{job_id:int}/retry", self.retry, methods=["POST"]),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/api/search", self.api_search),
            Route("/api/recordings/{job_id:int}", self.api_recording),
            Route("/api/jobs", self.api_jobs),
            Route("/healthz", self.healthz),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        handlers = {HTTPException: self.http_error, StoreError: self.store_error, guard.Forbidden: self.forbidden,
                    pages.BadRequest: self.bad_request, Exception: self.crash}
        inner = Starlette(routes=routes, exception_handlers=handlers, lifespan=self.lifespan)
        self.app = guard.Guard(inner, token)

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield

    # ------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def store(self, write: bool = False):
        """The store for one request: read-only unless ``write`` (Retry); never created here."""
        jobs = store_mod.open_store(self.database, create=False, readonly=not write, roots=self.roots)
        try:
            yield jobs
        finally:
            jobs.close()

    def read(self, fn, *args):
        """``fn(store, *args)`` on a fresh read-only store."""
        with self.store() as jobs:
            return fn(jobs, *args)

    def page(self, request: Request, template: str, context: dict, status: int = 200) -> HTMLResponse:
        html = self.env.get_template(template).render({**context, "csrf": request.state.csrf,
                                                       "signed_in": bool(self.token), "path": request.url.path})
        return HTMLResponse(html, status_code=status)

    # ------------------------------------------------------------ pages

    async def search_page(self, request: Request):
        query = pages.Query.parse(request.query_params)
        data = await run_in_threadpool(self.read, pages.search, query)
        return self.page(request, "search.html", {
            **data, "next_url": query.url(page=data["next"]) if data["next"] else None,
            "previous_url": query.url(page=data["previous"]) if data["previous"] else None})

    async def recording_page(self, request: Request):
        data = await self.recording_data(request)
        return self.page(request, "recording.html", data)

    async def recording_data(self, request: Request) -> dict:
        job_id = _ident(request, "job_id")
        description_id = _int(request.query_params.get("d"), "d")
        at = _seconds(request.query_params.get("t"))
        data = await run_in_threadpool(self.read, pages.recording, job_id, description_id, at)
        if data is None:
            raise HTTPException(404, f"There is no recording {job_id}" +
                                (f" with description {description_id}" if description_id else "") + ".")
        return data

    async def captions(self, request: Request):
        job_id, description_id = _ident(request, "job_id"), _ident(request, "description_id")

        def build(jobs):
            job = jobs.job(job_id)
            row = next((d for d in jobs.descriptions(job_id) if d["id"] == description_id), None) if job else None
            return None if row is None else captions.webvtt(row, jobs.events(description_id), job.duration)

        text = await run_in_threadpool(self.read, build)
        if text is None:
            raise HTTPException(404, "There are no such captions.")
        return Response(text, media_type="text/vtt; charset=utf-8")

    async def media(self, request: Request):
        job_id = _ident(request, "job_id")
        job = await run_in_threadpool(self.read, lambda jobs: jobs.job(job_id))
        if job is None:
            raise HTTPException(404, "There is no such recording.")
        try:
            st = await anyio.to_thread.run_sync(os.stat, job.path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise HTTPException(404, "The recording's file is no longer there.")
        kind = mimetypes.guess_type(job.path)[0] or "application/octet-stream"
        return FileResponse(job.path, media_type=kind, stat_result=st, headers={"cache-control": "private, no-cache"})

    async def thumbnail(self, request: Request):
        thumbnail_id = _ident(request, "thumbnail_id")
        return _jpeg(await run_in_threadpool(self.read, lambda jobs: jobs.thumbnail(thumbnail_id)))

    async def thumbnail_of(self, request: Request):
        """Frame ``seq`` of a description (the address ``notify.thumbnail_path`` builds by default)."""
        description_id, seq = _ident(request, "description_id"), _ident(request, "seq")

        def find(jobs):
            row = next((t for t in jobs.thumbnails([description_id])[description_id] if t["seq"] == seq), None)
            return None if row is None else jobs.thumbnail(row["id"])

        return _jpeg(await run_in_threadpool(self.read, find))

    async def jobs_page(self, request: Request):
        data = await run_in_threadpool(self.read, pages.jobs)
        retried = request.query_params.get("retried", "")
        return self.page(request, "jobs.html", {**data, "retried": int(retried) if retried.isdigit() else None})

    async def retry(self, request: Request):
        guard.check_csrf(request, await request.form())
        job_id = _ident(request, "job_id") if "job_id" in request.path_params else None

        def run():
            with self.store(write=True) as jobs:
                if job_id is None:
                    return jobs.retry()
                return None if jobs.job(job_id) is None else jobs.retry([job_id])

        count = await run_in_threadpool(run)
        if count is None:
            raise HTTPException(404, f"There is no job {job_id}.")
        return RedirectResponse(f"/jobs?retried={count}", status_code=303)

    async def login(self, request: Request):
        target = guard.safe_next(request.query_params.get("next", "/"))
        if not self.token:
            return RedirectResponse(target, status_code=303)
        error = ""
        if request.method == "POST":
            form = await request.form()
            guard.check_csrf(request, form)
            given = str(form.get("token", ""))
            if hmac.compare_digest(given.encode(), self.token.encode()):
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(guard.SESSION_COOKIE, guard.session_value(self.token), path="/", httponly=True,
                                    samesite="lax", max_age=guard.SESSION_DAYS * 86400)
                return response
            error = "That is not the token (serve.token in the server's config)."
        return self.page(request, "login.html", {"error": error, "next_path": target}, 401 if error else 200)

    async def logout(self, request: Request):
        guard.check_csrf(request, await request.form())
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(guard.SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------ JSON

    async def api_search(self, request: Request):
        query = pages.Query.parse(request.query_params)
        data = await run_in_threadpool(self.read, pages.search, query)
        return JSONResponse(pages.search_json(data))

    async def api_recording(self, request: Request):
        data = await self.recording_data(request)
        data.pop("chosen")
        return JSONResponse(data)

    async def api_jobs(self, request: Request):
        return JSONResponse(await run_in_threadpool(self.read, pages.jobs))

    async def healthz(self, request: Request):
        """The server answers and the database opens (its schema read and checked); nothing is counted."""
        await run_in_threadpool(self.read, lambda jobs: None)
        return JSONResponse({"status": "ok"})

    # ------------------------------------------------------------ errors

    def error(self, request: Request, status: int, title: str, detail: str) -> Response:
        if request.url.path.startswith(("/api/", "/healthz")):
            return JSONResponse({"error": detail}, status_code=status)
        return self.page(request, "error.html", {"title": title, "detail": detail}, status)

    async def http_error(self, request: Request, exc: HTTPException):
        titles = {404: "Not found", 405: "Not allowed"}
        detail = exc.detail if exc.status_code == 404 and exc.detail != "Not Found" else "There is no such page."
        if exc.status_code != 404:
            detail = str(exc.detail)
        return self.error(request, exc.status_code, titles.get(exc.status_code, "Error"), detail)

    async def store_error(self, request: Request, exc: StoreError):
        log.error("database: %s", exc)
        return self.error(request, 503, "Database unavailable",
                          "The database cannot be read right now (the server's log says why). Try again shortly.")

    async def forbidden(self, request: Request, exc: guard.Forbidden):
        return self.error(request, 403, "Refused", str(exc))

    async def bad_request(self, request: Request, exc: pages.BadRequest):
        return self.error(request, 400, "Bad request", str(exc))

    async def crash(self, request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return self.error(request, 500, "Something went wrong", "The server could not answer this request; its log "
                                                                "has the details.")


def _jpeg(data: bytes | None) -> Response:
    if data is None:
        raise HTTPException(404, "There is no such thumbnail.")
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})


def _ident(request: Request, key: str) -> int:
    """An id from the path; one larger than any database id is simply not there."""
    value = request.path_params[key]
    if value > LARGEST:
        raise HTTPException(404, "There is no such item.")
    return value


LARGEST = 2**63 - 1


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    if not value.isdigit() or len(value) > 18:
        raise pages.BadRequest(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _seconds(value: str | None) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise pages.BadRequest(f"t must be seconds, like 12.5, got {value!r}") from None
    if not 0 <= seconds < 10**7:
        raise pages.BadRequest(f"t must be seconds from the start of the recording, got {value!r}")
    return seconds


def create_app(database: str | os.PathLike, token: str = "", roots: dict | None = None):
    """The ASGI application serving ``database`` (which must exist); ``token`` turns the login on."""
    return Web(database, token, roots).app
