"""How many frames fit in one generation.

The RKLLM runtime caps a run at the context length fixed at conversion (4096
for the stock RK3588 models) and its behaviour past that is undocumented, so
rkvideo refuses to build a request that could overflow:

    max_frames = ⌊(max_context − 1 − prompt_tokens − max_new_tokens − reserve) / tokens_per_frame⌋

(the −1 because the whole request must stay strictly below the context length).

``tokens_per_frame`` is the frame's vision tokens, its start/end tags and its
timestamp text. Before a tokenizer is loaded the prompt is *estimated* by its
UTF-8 byte count plus one per text piece: every token of a byte-level BPE
(Qwen, InternVL, SmolLM) covers at least one byte and SentencePiece adds at
most one dummy-prefix token per piece, so the estimate can only err high
(about 4× for English prose, i.e. a few dozen tokens for a typical prompt).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError


class BudgetError(UsageError):
    """Not even one frame fits; the message says which setting to lower."""


def estimate_tokens(*texts: str) -> int:
    """An upper bound on the token count of ``texts`` (see module docstring)."""
    return sum(len(t.encode("utf-8")) + 1 for t in texts if t)


@dataclass(frozen=True)
class Plan:
    requested: int
    frames: int
    max_frames: int
    capped: bool
    max_context: int
    prompt_tokens: int
    frame_tokens: int
    max_new_tokens: int
    reserve: int

    @property
    def vision_tokens(self) -> int:
        return self.frames * self.frame_tokens

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.vision_tokens + self.max_new_tokens + self.reserve

    def as_dict(self) -> dict:
        return {"requested_frames": self.requested, "frames": self.frames, "max_frames": self.max_frames,
                "capped": self.capped, "max_context": self.max_context, "prompt_tokens": self.prompt_tokens,
                "tokens_per_frame": self.frame_tokens, "vision_tokens": self.vision_tokens,
                "max_new_tokens": self.max_new_tokens, "reserve": self.reserve, "total": self.total}


def plan(requested: int, *, max_context: int, prompt_tokens: int, frame_tokens: int,
         max_new_tokens: int, reserve: int) -> Plan:
    """Cap ``requested`` frames to what fits; raise BudgetError if none fits."""
    if requested < 1:
        raise BudgetError(f"--frames must be at least 1, got {requested}")
    # The runtime needs the whole request strictly below max_context, hence the −1.
    room = max_context - prompt_tokens - max_new_tokens - reserve - 1
    max_frames = max(room, 0) // frame_tokens
    if max_frames < 1:
        raise BudgetError(
            f"no frame fits in the {max_context}-token context: prompt ≈{prompt_tokens} + "
            f"max_new_tokens {max_new_tokens} + reserve {reserve} leave {room} tokens, one frame needs "
            f"{frame_tokens} (lower llm.max_new_tokens or --max-new-tokens, shorten the prompt, "
            f"or lower llm.reserve)")
    frames = min(requested, max_frames)
    return Plan(requested=requested, frames=frames, max_frames=max_frames, capped=frames < requested,
                max_context=max_context, prompt_tokens=prompt_tokens, frame_tokens=frame_tokens,
                max_new_tokens=max_new_tokens, reserve=reserve)
