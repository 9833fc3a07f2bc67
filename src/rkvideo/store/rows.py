"""What both backends write and read the same way: a description row, JSON columns, recovery notes.

Why shared: ``rkvideo migrate-db`` copies rows between SQLite and PostgreSQL,
and ``list``/``show``/``search`` print them alike, so a description must be
the same columns with the same JSON text whichever database holds it.
"""
from __future__ import annotations

import json
import os

from .base import Job, Status, StoreError, db_text, valid_name
from .fingerprints import fingerprint

JSON_COLUMNS = ("inputs", "frames", "timings", "notes")
EXCERPT = 400       # characters of a description the web page shows for a recording without a query


class Reads:
    """The reads that are the same SQL on both backends but for the parameter mark (``?`` or ``%s``).
    A store gives ``_rows(sql, params) -> list[dict]`` and ``_job(row) -> Job``."""

    mark = "?"

    def _jobs(self, sql: str, params=()) -> list[Job]:
        return [self._job(row) for row in self._rows(sql, params)]

    def _one(self, sql: str, params=()) -> Job | None:
        jobs = self._jobs(sql, params)
        return jobs[0] if jobs else None

    def job(self, job_id: int) -> Job | None:
        return self._one(f"SELECT * FROM jobs WHERE id = {self.mark}", [job_id])

    def jobs(self, status: Status | None = None) -> list[Job]:
        """Every job (or those with ``status``) by id, each with its number of descriptions."""
        sql = ("SELECT jobs.*, (SELECT count(*) FROM descriptions WHERE job_id = jobs.id) AS descriptions "
               "FROM jobs")
        if status:
            return self._jobs(sql + f" WHERE status = {self.mark} ORDER BY id", [Status(status).value])
        return self._jobs(sql + " ORDER BY id")

    def counts(self) -> dict[Status, int]:
        return {Status(row["status"]): row["n"] for row in
                self._rows("SELECT status, count(*) AS n FROM jobs GROUP BY status")}

    def descriptions(self, job_id: int) -> list[dict]:
        """The job's descriptions, oldest first, JSON columns decoded."""
        rows = self._rows(f"SELECT * FROM descriptions WHERE job_id = {self.mark} ORDER BY id", [job_id])
        return [decode(row) for row in rows]


def description_row(job: Job, result, timings: dict | None, source: str, stamp: str, path: str) -> dict:
    """A description as stored; ``path`` is the job's path at commit time."""
    tokens = counts(result.tokens)
    return {
        "job_id": job.id, "path": path, "hash": job.hash, "kind": str(getattr(result.kind, "value", result.kind)),
        "inputs": json.dumps([db_text(os.path.abspath(p)) for p in result.inputs], ensure_ascii=False),
        "text": result.text, "model": result.model.get("profile"),
        "vision_model": result.model.get("vision"), "llm_model": result.model.get("llm"),
        "prompt": result.prompt,
        "frames": json.dumps(result.frames, ensure_ascii=False), "frame_count": len(result.frames),
        "prompt_tokens": tokens.get("prompt"), "vision_tokens": tokens.get("vision"),
        "new_tokens": tokens.get("new"),
        "timings": json.dumps({**result.timings, **(timings or {})}),
        "notes": json.dumps(result.notes, ensure_ascii=False), "source": source, "created_at": stamp,
    }


def described_file(result) -> tuple[str, os.stat_result, str]:
    """``describe --db``: the result's (first) input file as stored — absolute path, stat, fingerprint."""
    path = os.path.abspath(result.inputs[0])
    if not valid_name(path):
        raise StoreError(f"{db_text(path)}: file name is not valid UTF-8 (rename the file to store it)")
    try:
        return path, os.stat(path), fingerprint(path)
    except OSError as exc:
        raise StoreError(f"{path}: cannot store the result: {exc.strerror}") from None


def counts(tokens) -> dict:
    """Token counts as a dict: ``pipeline.Tokens`` has ``as_dict()``; a plain dict is taken as it is."""
    if tokens is None:
        return {}
    return tokens if isinstance(tokens, dict) else tokens.as_dict()


def decode(row: dict) -> dict:
    """A description row with its JSON columns decoded (and nothing backend-specific)."""
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    row.pop("search", None)
    return row


def stopped_each_time(attempts: int) -> str:
    """Why recovery fails a job that was running at every one of its attempts."""
    return (f"the daemon stopped during each of {attempts} attempts "
            f"(it may crash on this file; `rkvideo retry` tries again)")


INTERRUPTED = "interrupted: the daemon stopped while describing"
KEPT = "file deleted before it was described again; the earlier description is kept"
FORGOTTEN = "its descriptions were removed (rkvideo forget); `rkvideo retry` describes it again"


def excerpt(text: str) -> str:
    """The start of a description on one line, cut at a word (the web page's recordings without a query)."""
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[:EXCERPT].rsplit(" ", 1)[0] + " …"
