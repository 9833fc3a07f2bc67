"""What rkvideo writes for people and for other programs, by name.

Why a package of its own: ``rkvideo describe`` and the ``watch`` daemon must
write the same things (terminal text for plans, results, jobs and search
hits; sidecar files beside recordings), so the renderers live once, below
both, and return text or write files instead of printing. The command line
decides where terminal text goes.

``sidecars``: the files beside a recording, one renderer per kind name
(``RENDERERS``: ``txt``, ``json``, ``vtt``), written atomically; ``vtt``:
the WebVTT cues; ``terminal``: the text the command line shows (tables,
plans, reports).
"""
from __future__ import annotations

from .sidecars import (KINDS, RENDERERS, Renderer, Sidecar, remove_stale_temps, renderer, targets, write_all,
                       write_atomic, write_each)

__all__ = ["KINDS", "RENDERERS", "Renderer", "Sidecar", "remove_stale_temps", "renderer", "targets", "write_all",
           "write_atomic", "write_each"]
