"""What both backends write and read the same way: a description row, JSON columns, recovery notes.

Why shared: ``rkvideo migrate-db`` copies rows between SQLite and PostgreSQL,
and ``list``/``show``/``search`` print them alike, so a description must be
the same columns with the same JSON text whichever database holds it.
"""
from __future__ import annotations

import json
import os

from .base import Job, db_text

JSON_COLUMNS = ("inputs", "frames", "timings", "notes")


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
