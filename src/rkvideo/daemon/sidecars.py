"""The sidecars of a described recording: written after its description, and written again later
when they could not be.

Why here, above the store and the writers: a sidecar that cannot be written (a full disk, a folder
in the way, a name longer than the file system allows) must not fail the job — its description is
in the database — and must not be lost either. Each kind is written on its own
(``output.write_each``); one that fails is kept in the store with its whole text and the reason
(``JobStore.missing_sidecars``), committed together with the description, and ``rewrite`` writes it
at the daemon's next scan of the folders or when ``rkvideo retry --sidecars`` asks. The stored text
is what the first try would have written, so a late sidecar equals an early one.

A missing sidecar is given up (its row goes, with a log line) when its recording was renamed or
deleted since: ``rkvideo retry PATH`` describes a renamed recording again, sidecars included.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .. import output
from ..store import JobStore, MissingSidecar

log = logging.getLogger(__name__)


def reason(exc: OSError) -> str:
    """An OSError as one line, without the path (the caller names it)."""
    return exc.strerror or str(exc)


def write(recording: str, result: dict, duration: float | None, kinds, out_dir, root, *,
          before_rename=None) -> list[MissingSidecar]:
    """Write the sidecars of one description; returns those that could not be written, for the store.
    Each failure is logged."""
    missing = []
    for sidecar in output.write_each(recording, result, duration, kinds, out_dir, root,
                                     before_rename=before_rename):
        if sidecar.error is None:
            continue
        error = reason(sidecar.error)
        log.error("%s: %s sidecar not written: %s (%s; kept in the database, written at the next scan or by "
                  "`rkvideo retry --sidecars`)", recording, sidecar.kind, error, sidecar.path)
        missing.append(MissingSidecar(job_id=0, kind=sidecar.kind, path=str(sidecar.path), recording=recording,
                                      text=sidecar.text, error=error))
    return missing


def rewrite(store: JobStore, ids: list[int] | None = None) -> tuple[list, list]:
    """Write the missing sidecars (of the jobs ``ids``, or all). Returns (written, still missing), the
    latter as (sidecar, error) pairs; the store keeps the new reason of each."""
    written, failed = [], []
    for missing in store.missing_sidecars(ids):
        job = store.job(missing.job_id)
        if job is None or job.path != missing.recording or not os.path.lexists(job.path):
            store.sidecar_written(missing.job_id, missing.kind)
            log.info("%s: %s sidecar given up: the recording was renamed or deleted since (`rkvideo retry` on "
                     "its new name describes it again)", missing.recording, missing.kind)
            continue
        try:
            output.write_atomic(Path(missing.path), missing.text)
        except OSError as exc:
            error = reason(exc)
            store.sidecar_failed(missing.job_id, missing.kind, error)
            level = logging.INFO if error == missing.error else logging.WARNING
            log.log(level, "%s: %s sidecar still not written: %s", missing.recording, missing.kind, error)
            failed.append((missing, error))
            continue
        store.sidecar_written(missing.job_id, missing.kind)
        log.info("%s: wrote its missing %s sidecar %s", missing.recording, missing.kind, missing.path)
        written.append(missing)
    return written, failed
