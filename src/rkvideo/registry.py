"""Undoable registrations for the runtime registries of ``vision`` and ``llm``.

Why one class for both: tests register their own runtimes by file suffix and must put back whatever
was there before, whether the entry came from rkvideo or from another test; the rule is the same for
encoders and LLMs.
"""
from __future__ import annotations


class Registration:
    """What ``register`` returns: ``undo()``, or the end of a ``with`` block, restores the previous entry."""

    def __init__(self, table: dict, suffix: str, previous):
        self.table, self.suffix, self.previous = table, suffix, previous

    def undo(self) -> None:
        if self.previous is None:
            self.table.pop(self.suffix, None)
        else:
            self.table[self.suffix] = self.previous

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def add(table: dict, suffix: str, runtime, example: str) -> Registration:
    """Enter ``runtime`` for file names ending in ``suffix`` (any case) in ``table``, replacing an entry
    for the same suffix; ``example`` (".gguf") is shown when the suffix is malformed."""
    suffix = suffix.lower()
    if not suffix.startswith(".") or len(suffix) < 2:
        raise ValueError(f"a runtime suffix starts with a dot, like {example!r}, not {suffix!r}")
    previous = table.get(suffix)
    table[suffix] = runtime
    return Registration(table, suffix, previous)
