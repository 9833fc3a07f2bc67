"""The web page's search on PostgreSQL: moments and recordings best first, filtered, a page at a time.

Why a module of its own (``browse`` is the SQLite one): read-only queries
that only the web page needs, returning the same rows.

* Matching: every word of the query must appear (``plainto_tsquery`` over the
  words alone, so no query is a syntax error), in ``events.search`` and
  ``descriptions.search`` (GIN indexes), with English stemming.
* Ranking: ``ts_rank``, negated so that lower is better as with SQLite's bm25,
  over each table's ``RANK_WINDOW`` newest matches that pass the filters: a
  common word costs a bounded amount, and the newest matches are what a
  camera archive search wants first (the SQLite search does the same).
* Snippets (``ts_headline``, matches between ``MARK`` and ``END``) are made for
  the page's rows only.
* Folders: ``jobs.folder`` is the folder of the job's key (``cameras/door``),
  which every board agrees on; the page shows it as this machine's folder
  when the machine names that root (``[watch] roots``).
"""
from __future__ import annotations

import re
from collections.abc import Callable

from .base import END, MARK, Filters
from .names import RootNames
from .rows import excerpt

RANK_WINDOW = 2000
Rows = Callable[..., list]      # rows(sql, params) -> list of dicts
JOB = "j.id AS job_id, j.path, j.root, j.relpath, j.status, j.mtime, j.error, j.folder"


def browse(rows: Rows, names: RootNames, query: str, filters: Filters, limit: int, offset: int) -> list[dict]:
    """Hits as ``browse.search``/``browse.recordings`` return them on SQLite."""
    words = re.findall(r"\w+", query)
    if not query.strip():
        return recordings(rows, names, filters, limit, offset)
    if not words:
        return []
    return search(rows, names, " ".join(words), filters, limit, offset)


def where(names: RootNames, filters: Filters) -> tuple[str, dict]:
    """SQL conditions on the jobs table ``j`` for ``filters``, with their parameters."""
    parts, params = [], {}
    if filters.folder is not None:
        parts.append("j.folder = %(folder)s")
        params["folder"] = key_folder(names, filters.folder)
    if filters.since is not None:
        parts.append("j.mtime >= %(since)s")
        params["since"] = filters.since
    if filters.until is not None:
        parts.append("j.mtime < %(until)s")
        params["until"] = filters.until
    if filters.status is not None:
        parts.append("j.status = %(status)s")
        params["status"] = str(filters.status)
    return "".join(f" AND {p}" for p in parts), params


def search(rows: Rows, names: RootNames, words: str, filters: Filters, limit: int, offset: int) -> list[dict]:
    condition, params = where(names, filters)

    def arm(kind: str, table: str, extra: str) -> str:
        return (f"SELECT '{kind}' AS kind, x.id, -ts_rank(x.search, q.q) AS score FROM (SELECT t.id, t.search "
                f"FROM {table} t JOIN jobs j ON j.id = t.job_id, q WHERE t.search @@ q.q{extra}{condition} "
                f"ORDER BY t.id DESC LIMIT {RANK_WINDOW}) x, q")

    ranked = rows(f"WITH q AS (SELECT plainto_tsquery('english', %(words)s) AS q) SELECT * FROM ("
                  f"{arm('event', 'events', ' AND t.description_id IS NOT NULL')} UNION ALL "
                  f"{arm('description', 'descriptions', '')}) hits ORDER BY score, kind DESC, id DESC "
                  "LIMIT %(limit)s OFFSET %(offset)s", {**params, "words": words, "limit": limit, "offset": offset})
    details = {**_details(rows, "event", [h["id"] for h in ranked if h["kind"] == "event"], words),
               **_details(rows, "description", [h["id"] for h in ranked if h["kind"] == "description"], words)}
    hits = []
    for hit in ranked:
        found = details[(hit["kind"], hit["id"])]
        hits.append({"kind": hit["kind"], "event_id": hit["id"] if hit["kind"] == "event" else None,
                     "start": found.pop("start_s"), "end": found.pop("end_s"), "score": hit["score"],
                     **shown(names, found)})
    return hits


def _details(rows: Rows, kind: str, ids: list, words: str) -> dict:
    """(kind, id) -> the hit's moment times, description, recording and snippet."""
    if not ids:
        return {}
    if kind == "event":
        hit, size, columns = "e", 32, "e.start_s, e.end_s"
        tables = "events e JOIN descriptions d ON d.id = e.description_id JOIN jobs j ON j.id = e.job_id"
    else:
        hit, size, columns = "d", 24, "NULL::float AS start_s, NULL::float AS end_s"
        tables = "descriptions d JOIN jobs j ON j.id = d.job_id"
    found = rows(f"WITH q AS (SELECT plainto_tsquery('english', %(words)s) AS q) SELECT {hit}.id AS hit_id, {columns}, "
                 f"d.id AS description_id, d.model, d.created_at, {JOB}, ts_headline('english', {hit}.text, q.q, "
                 f"%(options)s) AS snippet FROM {tables}, q WHERE {hit}.id = ANY(%(ids)s::integer[])",
                 {"words": words, "ids": ids,
                  "options": f'StartSel="{MARK}", StopSel="{END}", MaxWords={size}, MinWords={size // 3}'})
    return {(kind, row.pop("hit_id")): row for row in found}


def recordings(rows: Rows, names: RootNames, filters: Filters, limit: int, offset: int) -> list[dict]:
    """Recordings newest first (by their file time), each with an excerpt of its latest description."""
    condition, params = where(names, filters)
    found = rows(f"SELECT {JOB}, (SELECT max(id) FROM descriptions WHERE job_id = j.id) AS description_id "
                 f"FROM jobs j WHERE true{condition} ORDER BY j.mtime DESC NULLS LAST, j.id DESC "
                 "LIMIT %(limit)s OFFSET %(offset)s", {**params, "limit": limit, "offset": offset})
    ids = [r["description_id"] for r in found if r["description_id"]]
    texts = {r["id"]: r for r in rows("SELECT id, text, model, created_at FROM descriptions "
                                      "WHERE id = ANY(%s::integer[])", [ids])} if ids else {}
    hits = []
    for row in found:
        text = texts.get(row["description_id"], {})
        hits.append({"kind": "recording", "event_id": None, "start": None, "end": None, "score": None,
                     "model": text.get("model"), "created_at": text.get("created_at"),
                     "snippet": excerpt(text.get("text") or row["error"] or ""), **shown(names, row)})
    return hits


def shown(names: RootNames, row: dict) -> dict:
    """A row's path and folder as this machine names them (``root``/``relpath`` are not shown)."""
    row["path"] = names.local(row.pop("root"), row.pop("relpath"), row["path"])
    row["folder"] = local_folder(names, row["folder"])
    return row


def local_folder(names: RootNames, folder: str) -> str:
    """``cameras/door`` -> ``/mnt/nas/cameras/door`` when this machine names the root ``cameras``."""
    if folder.startswith("/") or not folder:
        return folder
    name, _, rest = folder.partition("/")
    if name not in names.folders:
        return folder
    return names.folders[name] + (f"/{rest}" if rest else "")


def key_folder(names: RootNames, folder: str) -> str:
    """The inverse of ``local_folder``: a folder as the jobs table keys it."""
    return names.key(folder.rstrip("/") + "/-")[:-2]
