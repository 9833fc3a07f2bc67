"""The SQL behind the web page's search: moments and recordings best first, filtered, a page at a time.

Why a module of its own: ``SqliteStore`` keeps the queue; these are read-only
queries that only the web page needs, and they are tuned for size (100 000
descriptions and 500 000 moments must answer in milliseconds):

* Ranking: FTS5's bm25, over the events (moments) and the descriptions
  (recordings) together; both scores are on the same scale, lower is better.
  Computing bm25 for every row that contains a common word ("car" in a third
  of all captions) costs over 100 ms, so each table ranks its ``RANK_WINDOW``
  newest matches that pass the filters (rowid order, which FTS5 walks without
  scoring). A rare word is ranked over all its matches; a common word over
  the newest thousands, which is also what someone searching a camera archive
  wants to see first.
* Snippets are made only for the page's rows, in a second query: FTS5 makes a
  snippet from the match it is at, and thousands of them are expensive.
* Snippet marks are the control characters ``base.MARK``/``base.END`` so that the
  page can escape the text first and then turn them into highlights.
* The folder filter and the folder list use ``migrations.FOLDER_SQL`` with the
  index built on that same expression; the list walks that index one folder
  at a time (a recursive query), so it costs one lookup per folder.
"""
from __future__ import annotations

from .base import END, MARK, Filters
from .migrations import FOLDER_SQL
from .rows import excerpt

RANK_WINDOW = 2000

_JOB = ("j.id AS job_id, j.path AS path, j.status AS status, j.mtime AS mtime, j.error AS error, "
        f"{FOLDER_SQL.replace('path', 'j.path')} AS folder")


def _where(filters: Filters, fast_folder: bool = False) -> tuple[str, dict]:
    """SQL conditions on the jobs table ``j`` for ``filters``, with their parameters.

    ``fast_folder``: test the folder with two cheap string comparisons (the path starts with the folder
    and "/", and has no "/" after it) instead of ``FOLDER_SQL``: the same rows, but no index can serve
    either form inside an FTS scan, and this one costs far less per row."""
    parts, params = [], {}
    if filters.folder is not None:
        if fast_folder:
            parts.append("substr(j.path, 1, :folder_len) = :folder_prefix "
                         "AND instr(substr(j.path, :folder_len + 1), '/') = 0")
            params.update(folder_prefix=filters.folder + "/", folder_len=len(filters.folder) + 1)
        else:
            parts.append(f"{FOLDER_SQL.replace('path', 'j.path')} = :folder")
            params["folder"] = filters.folder
    if filters.since is not None:
        parts.append("j.mtime >= :since")
        params["since"] = filters.since
    if filters.until is not None:
        parts.append("j.mtime < :until")
        params["until"] = filters.until
    if filters.status is not None:
        parts.append("j.status = :status")
        params["status"] = str(filters.status)
    return "".join(f" AND {p}" for p in parts), params


# kind → (FTS5 table, content table, its alias)
ARMS = {"event": ("events_fts", "events", "e"), "description": ("descriptions_fts", "descriptions", "d")}
# A filter that keeps at most this share of the jobs is applied as a set of row ids, unless fewer than
# FEW rows of each table match the words (see ``_ranked`` and ``_how``).
SELECTIVE = 0.2
FEW = 5000


def _ranked(db, kind: str, how: str, filters: Filters) -> tuple[str, dict]:
    """One table's newest ``RANK_WINDOW`` matches that pass the filters, with their bm25 scores.

    How the filters are applied decides the cost, because FTS5 walks the matches newest first and every
    match it has to look at costs time:

    * ``"none"``: no filter; only moments still without a description (a timeline being described) are
      left out, as a small set;
    * ``"set"``: a selective filter (one folder, a few days): the ids of the rows of the jobs that pass
      are collected once through the indexes, and a match is kept if its id is in that set; with a date
      range the scan is also bounded by the lowest and highest of those ids (rows of one period were
      written together, so their ids are neighbours, and FTS5 seeks to a rowid range);
    * ``"join"``: a filter that most jobs pass (``status = done``): each match's job is looked up, and
      the window fills after a few thousand matches anyway.
    """
    fts, table, alias = ARMS[kind]
    joins, condition, params = "", "", {}
    if how == "none":
        if kind == "event":
            condition = f" AND +{fts}.rowid NOT IN (SELECT id FROM events WHERE description_id IS NULL)"
    elif how == "set":
        where, params = _where(filters)
        jobs = f"SELECT j.id FROM jobs j WHERE 1{where}"
        described = " AND description_id IS NOT NULL" if kind == "event" else ""
        condition = f" AND +{fts}.rowid IN (SELECT id FROM {table} WHERE job_id IN ({jobs}){described})"
        if filters.since is not None or filters.until is not None:
            condition += f" AND {fts}.rowid BETWEEN :{kind}_low AND :{kind}_high"
            low, high = _bounds(db, table, jobs, params)
            params = {**params, f"{kind}_low": low, f"{kind}_high": high}
    else:
        where, params = _where(filters, fast_folder=True)
        joins = f" JOIN {table} {alias} ON {alias}.id = {fts}.rowid JOIN jobs j ON j.id = {alias}.job_id"
        condition = (f" AND {alias}.description_id IS NOT NULL" if kind == "event" else "") + where
    sql = (f"SELECT * FROM (SELECT '{kind}' AS kind, {fts}.rowid AS id, bm25({fts}) AS score FROM {fts}{joins} "
           f"WHERE {fts} MATCH :match{condition} ORDER BY {fts}.rowid DESC LIMIT {RANK_WINDOW})")
    return sql, params


def _bounds(db, table: str, jobs: str, params: dict) -> tuple[int, int]:
    """The lowest and highest row id of ``table`` among the rows of ``jobs`` ((1, 0) when there are none)."""
    low, high = db.execute(f"SELECT min(id), max(id) FROM {table} WHERE job_id IN ({jobs})", params).fetchone()
    return (1, 0) if low is None else (low, high)


def _how(db, match: str, filters: Filters) -> str:
    """Which way ``_ranked`` applies ``filters``: by how many rows match the words (counted up to
    ``FEW``, which costs well under a millisecond) and by the share of the jobs that pass the filters
    (counted up to the ``SELECTIVE`` share)."""
    where, params = _where(filters)
    if not where:
        return "none"
    if all(_count(db, f"SELECT 1 FROM {fts} WHERE {fts} MATCH :match", {"match": match}, FEW) < FEW
           for fts in ("events_fts", "descriptions_fts")):
        return "join"       # few matches: looking up each one's job is cheaper than any set
    (last,) = db.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()
    cap = int(SELECTIVE * last) + 1
    return "set" if _count(db, f"SELECT 1 FROM jobs j WHERE 1{where}", params, cap) < cap else "join"


def _count(db, sql: str, params: dict, cap: int) -> int:
    (n,) = db.execute(f"SELECT count(*) FROM ({sql} LIMIT {int(cap)})", params).fetchone()
    return n


def search(db, match: str, filters: Filters, limit: int, offset: int) -> list[dict]:
    """Moments (``kind`` "event") and recordings (``kind`` "description") matching the FTS5 expression
    ``match``, best first, with snippets."""
    how = _how(db, match, filters)
    events, params = _ranked(db, "event", how, filters)
    descriptions, more = _ranked(db, "description", how, filters)
    sql = (f"SELECT * FROM ({events} UNION ALL {descriptions}) "
           "ORDER BY score, kind DESC, id DESC LIMIT :limit OFFSET :offset")
    ranked = list(db.query(sql, {**params, **more, "match": match, "limit": limit, "offset": offset}))
    snippets = _snippets(db, match, ranked)
    return [{**_details(db, hit), "snippet": snippets.get((hit["kind"], hit["id"]), "")} for hit in ranked]


def _snippets(db, match: str, ranked: list) -> dict:
    out = {}
    for kind, table, tokens in (("event", "events_fts", 32), ("description", "descriptions_fts", 24)):
        ids = [h["id"] for h in ranked if h["kind"] == kind]
        if not ids:
            continue
        marks = ", ".join("?" for _ in ids)
        rows = db.execute(f"SELECT rowid, snippet({table}, 0, ?, ?, '…', {tokens}) FROM {table} "
                          f"WHERE {table} MATCH ? AND rowid IN ({marks})", [MARK, END, match, *ids])
        out.update({(kind, rowid): text for rowid, text in rows})
    return out


def _details(db, hit: dict) -> dict:
    """The rest of a ranked hit: its moment's times, its description, its recording."""
    if hit["kind"] == "event":
        row = db.execute(f"SELECT e.start_s AS start_s, e.end_s AS end_s, d.id AS description_id, d.model AS model, "
                         f"d.created_at AS created_at, {_JOB} FROM events e "
                         "JOIN descriptions d ON d.id = e.description_id JOIN jobs j ON j.id = e.job_id "
                         "WHERE e.id = ?", [hit["id"]])
    else:
        row = db.execute(f"SELECT NULL AS start_s, NULL AS end_s, d.id AS description_id, d.model AS model, "
                         f"d.created_at AS created_at, {_JOB} FROM descriptions d "
                         "JOIN jobs j ON j.id = d.job_id WHERE d.id = ?", [hit["id"]])
    names = [c[0] for c in row.description]
    values = dict(zip(names, row.fetchone()))
    start, end = values.pop("start_s"), values.pop("end_s")
    return {"kind": hit["kind"], "event_id": hit["id"] if hit["kind"] == "event" else None,
            "start": start, "end": end, "score": hit["score"], **values}


def recordings(db, filters: Filters, limit: int, offset: int) -> list[dict]:
    """Recordings newest first (by their file time), each with an excerpt of its latest description."""
    where, params = _where(filters)
    sql = (f"SELECT {_JOB}, (SELECT max(id) FROM descriptions WHERE job_id = j.id) AS description_id "
           f"FROM jobs j WHERE 1{where} ORDER BY j.mtime DESC, j.id DESC LIMIT :limit OFFSET :offset")
    rows = list(db.query(sql, {**params, "limit": limit, "offset": offset}))
    texts = _texts(db, [r["description_id"] for r in rows if r["description_id"]])
    hits = []
    for row in rows:
        found = texts.get(row["description_id"], {})
        hits.append({"kind": "recording", "event_id": None, "start": None, "end": None, "score": None,
                     "model": found.get("model"), "created_at": found.get("created_at"),
                     "snippet": excerpt(found.get("text") or row["error"] or ""), **row})
    return hits


def _texts(db, ids: list) -> dict:
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = db.query(f"SELECT id, text, model, created_at FROM descriptions WHERE id IN ({marks})", ids)
    return {row["id"]: row for row in rows}




def folders(db) -> list[str]:
    """Every folder that holds a recording, in order: one index lookup per folder."""
    sql = (f"WITH RECURSIVE f(folder) AS (SELECT min({FOLDER_SQL}) FROM jobs UNION ALL "
           f"SELECT (SELECT min({FOLDER_SQL}) FROM jobs WHERE {FOLDER_SQL} > f.folder) FROM f "
           "WHERE f.folder IS NOT NULL) SELECT folder FROM f WHERE folder IS NOT NULL")
    return [row[0] for row in db.execute(sql)]


def thumbnails(db, description_ids: list) -> dict:
    """description id → its thumbnails in frame order (id, seq, seconds, path)."""
    out: dict = {d: [] for d in description_ids}
    if not description_ids:
        return out
    marks = ", ".join("?" for _ in description_ids)
    for row in db.query(f"SELECT id, description_id, seq, seconds, path FROM thumbnails "
                        f"WHERE description_id IN ({marks}) ORDER BY description_id, seq", list(description_ids)):
        out[row["description_id"]].append(row)
    return out
