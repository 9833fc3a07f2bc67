"""What each page shows, as plain data: the HTML templates and the JSON endpoints render the same dicts.

Why one place: the search page and ``/api/search`` (and the recording page and
``/api/recordings/{id}``) must never disagree, and the templates should only
lay data out. Everything here reads through the ``JobStore`` protocol, so the
page works on any store; it never opens a file a request names — recordings
and thumbnails are reached by their id in the database (see ``routes``).
"""
from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import PurePosixPath
from urllib.parse import urlencode

from ..store import END, MARK, Filters, JobStore, Status

PER_PAGE = 20
MAX_PAGE = 10_000
STRIP = 8       # frames shown per search result


class BadRequest(ValueError):
    """A query parameter that cannot be used; the message says which and why."""


@dataclass
class Query:
    """The search form: words, filters, page."""
    text: str = ""
    folder: str = ""
    since: str = ""         # YYYY-MM-DD, from the start of that day (server's local time)
    until: str = ""         # YYYY-MM-DD, to the end of that day
    status: str = ""
    page: int = 1

    @classmethod
    def parse(cls, params) -> Query:
        query = cls(text=params.get("q", "").strip(), folder=params.get("folder", ""),
                    since=params.get("from", ""), until=params.get("to", ""), status=params.get("status", ""))
        raw_page = params.get("page", "1") or "1"
        if not raw_page.isdigit() or not 1 <= int(raw_page) <= MAX_PAGE:
            raise BadRequest(f"page must be a number from 1 to {MAX_PAGE}, got {raw_page!r}")
        query.page = int(raw_page)
        if query.status and query.status not in {s.value for s in Status}:
            raise BadRequest(f"status must be one of {', '.join(s.value for s in Status)}, got {query.status!r}")
        query.filters()     # the dates must parse
        return query

    def filters(self) -> Filters:
        since = _day(self.since, "from")
        until = _day(self.until, "to")
        return Filters(folder=self.folder or None,
                       since=since.timestamp() if since else None,
                       until=(until + timedelta(days=1)).timestamp() if until else None,
                       status=Status(self.status) if self.status else None)

    def params(self, **change) -> dict:
        values = {"q": self.text, "folder": self.folder, "from": self.since, "to": self.until,
                  "status": self.status, "page": self.page, **change}
        return {k: v for k, v in values.items() if v not in ("", None) and not (k == "page" and v == 1)}

    def url(self, path: str = "/", **change) -> str:
        params = self.params(**change)
        return path + ("?" + urlencode(params) if params else "")


def _day(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time())
    except ValueError:
        raise BadRequest(f"{name} must be a date like 2024-05-31, got {value!r}") from None


# ------------------------------------------------------------------ formatting

def when(mtime: float | None) -> str:
    """A file time as the server's local time, to the second."""
    if mtime is None:
        return ""
    return datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M:%S")


def clock(seconds: float | None) -> str:
    """``1:05`` or ``1:02:03``: a moment's time in the recording."""
    if seconds is None:
        return ""
    whole = int(max(seconds, 0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def recording_url(job_id: int, description_id: int | None = None, at: float | None = None) -> str:
    params = {}
    if description_id is not None:
        params["d"] = description_id
    if at is not None:
        params["t"] = f"{at:g}"
    return f"/recordings/{job_id}" + ("?" + urlencode(params) if params else "")


def thumbnail_url(thumbnail_id: int) -> str:
    return f"/thumbnails/{thumbnail_id}.jpg"


def frame_strip(thumbnails: list, start: float | None = None, end: float | None = None) -> list:
    """The thumbnails to show: those inside the moment [start, end] (the nearest one if none is), or all."""
    chosen = thumbnails
    if start is not None and thumbnails:
        inside = [t for t in thumbnails if t["seconds"] is not None and start <= t["seconds"] <= (end or start)]
        chosen = inside or [min(thumbnails, key=lambda t: abs((t["seconds"] or 0) - start))]
    return [{"id": t["id"], "url": thumbnail_url(t["id"]), "seconds": t["seconds"], "clock": clock(t["seconds"])}
            for t in chosen[:STRIP]]


# ------------------------------------------------------------------ search

KINDS = {"event": "moment", "description": "recording", "recording": "recording"}


def search(store: JobStore, query: Query) -> dict:
    """The search page: a page of hits (moments and recordings), the filters' choices, paging links."""
    rows = store.browse(query.text, query.filters(), PER_PAGE + 1, (query.page - 1) * PER_PAGE)
    more, rows = len(rows) > PER_PAGE, rows[:PER_PAGE]
    thumbs = store.thumbnails(sorted({r["description_id"] for r in rows if r["description_id"]}))
    return {
        "query": query,
        "hits": [_hit(row, thumbs) for row in rows],
        "folders": store.folders(),
        "statuses": [s.value for s in Status],
        "page": query.page,
        "next": query.page + 1 if more else None,
        "previous": query.page - 1 if query.page > 1 else None,
    }


def _hit(row: dict, thumbs: dict) -> dict:
    start, end = row["start"], row["end"]
    path = PurePosixPath(row["path"])
    return {
        "kind": KINDS[row["kind"]],
        "job_id": row["job_id"], "description_id": row["description_id"], "event_id": row["event_id"],
        "url": recording_url(row["job_id"], row["description_id"], start),
        "name": path.name, "path": row["path"], "folder": row["folder"], "camera": path.parent.name,
        "time": when(row["mtime"]), "status": row["status"],
        "start": start, "end": end, "span": f"{clock(start)}–{clock(end)}" if start is not None else "",
        "snippet": row["snippet"], "score": row["score"], "model": row["model"],
        "frames": [{**f, "href": recording_url(row["job_id"], row["description_id"], f["seconds"])}
                   for f in frame_strip(thumbs.get(row["description_id"], []), start, end)],
    }


def search_json(page: dict) -> dict:
    """``/api/search``: the same hits, with plain-text snippets and the matches listed apart."""
    hits = []
    for hit in page["hits"]:
        snippet = hit["snippet"]
        matches = [part.split(END, 1)[0] for part in snippet.split(MARK)[1:]]
        hits.append({**hit, "snippet": snippet.replace(MARK, "").replace(END, ""), "matches": matches})
    query = page["query"]
    return {"query": query.params(page=None), "page": page["page"], "per_page": PER_PAGE, "results": hits,
            "next": query.url("/api/search", page=page["next"]) if page["next"] else None}


# ------------------------------------------------------------------ one recording

def recording(store: JobStore, job_id: int, description_id: int | None = None, at: float | None = None) -> dict | None:
    """A recording's page: its job, every description (newest first) with moments and frames, the one
    chosen (``description_id``, else the newest) and where the player starts (``at`` seconds)."""
    job = store.job(job_id)
    if job is None:
        return None
    descriptions = store.descriptions(job_id)
    thumbs = store.thumbnails([d["id"] for d in descriptions])
    shown = [_description(store, job_id, d, thumbs.get(d["id"], [])) for d in reversed(descriptions)]
    chosen = next((d for d in shown if d["id"] == description_id), None) if description_id else None
    if description_id is not None and chosen is None:
        return None
    path = PurePosixPath(job.path)
    return {
        "job": job.as_dict(), "name": path.name, "folder": str(path.parent), "camera": path.parent.name,
        "time": when(job.mtime), "available": os.path.isfile(job.path),
        "media_url": f"/media/{job_id}", "start": at,
        "picture": (mimetypes.guess_type(job.path)[0] or "").startswith("image/"),   # a photo set's first image
        "descriptions": shown, "chosen": chosen or (shown[0] if shown else None),
    }


def _description(store: JobStore, job_id: int, row: dict, thumbs: list) -> dict:
    events = store.events(row["id"])
    for event in events:
        event["span"] = f"{clock(event['start'])}–{clock(event['end'])}"
        event["url"] = recording_url(job_id, row["id"], event["start"])
    frames = [{**f, "clock": clock(f.get("seconds")), "url": recording_url(job_id, row["id"], f.get("seconds"))}
              for f in row.get("frames") or []]
    pictures = {t["seq"]: t for t in thumbs}
    for seq, frame in enumerate(frames):
        picture = pictures.get(seq)
        frame["thumbnail_url"] = thumbnail_url(picture["id"]) if picture else None
    return {**row, "events": events, "frames": frames, "captions_url": f"/recordings/{job_id}/captions/{row['id']}.vtt",
            "url": recording_url(job_id, row["id"])}


# ------------------------------------------------------------------ jobs

FAILED_SHOWN = 200


def jobs(store: JobStore) -> dict:
    """Counts per status, what runs now, and the failed jobs (newest first) with their reasons."""
    counts = store.counts()
    failed = sorted(store.jobs(Status.FAILED), key=lambda j: (j.finished_at or "", j.id), reverse=True)
    return {
        "counts": {s.value: counts.get(s, 0) for s in Status},
        "total": sum(counts.values()),
        "running": [_job(j) for j in store.jobs(Status.RUNNING)],
        "failed": [_job(j) for j in failed[:FAILED_SHOWN]],
        "failed_more": max(len(failed) - FAILED_SHOWN, 0),
    }


def _job(job) -> dict:
    return {**job.as_dict(), "name": PurePosixPath(job.path).name, "url": recording_url(job.id),
            "time": when(job.mtime)}
