"""One multimodal request from a prompt, frame timestamps and frame embeddings.

Why a runtime-neutral request: the two LLM runtimes want the same things in
different shapes. RKLLM takes a prompt with ``<image>`` placeholders plus one
float buffer and expands the tags itself; llama.cpp is fed token ids and
embedding rows in order. So the assembler fixes *what* is asked — the user
turn as text pieces and image groups, one contiguous frame-major float32
buffer of ``n_frames × tokens_per_image × width``, and the token accounting —
and checks shapes and the context budget before any runtime is called. Each
runtime only renders it.

A text-only request (``TextRequest``, ``build_text``) carries no images: the
timeline's summary over the captions of a recording's moments.

Placeholder rules differ by runtime: RKLLM 1.2.x accepts ONE ``<image>`` for
all frames (``SINGLE``); RKLLM 1.3.0 and llama.cpp take one per image
(``PER_IMAGE``), which lets each frame carry its own timestamp.

The text pieces of the user turn (the question, the timestamps) are plain
text, never markup: a question containing ``<|im_end|>`` must not close the
user turn, and one containing ``<image>`` must not become a placeholder.
llama.cpp tokenizes them with special tokens off. RKLLM takes one prompt
string and parses it itself, with no switch to turn that off, so for it
``inert`` breaks every tag-like ``<`` with an invisible WORD JOINER (U+2060).
The budget counts the text in that form, which is an upper bound for both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .budget import BudgetError, estimate_tokens
from .errors import UsageError
from .models import Profile

PER_IMAGE = "per_image"
SINGLE = "single"
PLACEHOLDER = "<image>"
# Put after a "<" that starts something tag-like ("<|", "</", "<image"): no special token or tag of any
# supported family then matches, and the text reads the same (U+2060 WORD JOINER is invisible).
WORD_JOINER = "\u2060"
_TAG_START = re.compile(r"<(?=[|/A-Za-z_])")


def inert(text: str) -> str:
    """``text`` with every tag-like ``<`` broken by a word joiner, for a runtime that parses its prompt
    string for special tokens and image placeholders (RKLLM)."""
    return _TAG_START.sub("<" + WORD_JOINER, text)


class ShapeError(UsageError):
    """Embeddings do not have the shape the model profile says."""


@dataclass(frozen=True)
class Images:
    """A placeholder standing for frames ``first`` … ``first + count − 1``."""
    first: int
    count: int


@dataclass(frozen=True)
class Request:
    profile: Profile
    parts: tuple                 # str | Images, the user turn in order
    embeddings: np.ndarray       # (N, T, E) float32, C-contiguous, frame-major
    stamps: tuple                # seconds per frame, or () for still images
    max_new_tokens: int
    max_context: int
    prompt_tokens: int           # upper-bound estimate of the text, template included

    @property
    def n_images(self) -> int:
        return self.embeddings.shape[0]

    @property
    def tokens_per_image(self) -> int:
        return self.embeddings.shape[1]

    @property
    def width(self) -> int:
        return self.embeddings.shape[2]

    @property
    def vision_tokens(self) -> int:
        return self.n_images * (self.tokens_per_image + self.profile.tag_tokens)

    def user_text(self, placeholder: str = PLACEHOLDER, text=None) -> str:
        """The user turn with one ``placeholder`` per image group; ``text`` (e.g. ``inert``) is applied
        to the text pieces, not to the placeholders."""
        return "".join((text(p) if text else p) if isinstance(p, str) else placeholder for p in self.parts)

    def frame_rows(self, group: Images) -> np.ndarray:
        """The embedding rows of one image group, (count·T, E)."""
        block = self.embeddings[group.first:group.first + group.count]
        return block.reshape(-1, self.width)


@dataclass(frozen=True)
class TextRequest:
    """A request without images: the user turn as plain text."""
    profile: Profile
    text: str
    max_new_tokens: int
    max_context: int
    prompt_tokens: int           # upper-bound estimate of the text, template included

    n_images = 0
    vision_tokens = 0


def build_text(profile: Profile, text: str, *, max_new_tokens: int, max_context: int | None = None,
               reserve: int = 0, text_tokens: int | None = None) -> TextRequest:
    """Check the budget of a text-only request, then freeze it. ``text_tokens``: an upper bound on the
    tokens of ``text`` known better than the byte count (text the model generated itself)."""
    chat = profile.chat
    # The text as plain text (``inert``): each word joiner is 3 bytes, at most 3 tokens.
    joiners = inert(text).count(WORD_JOINER)
    counted = estimate_tokens(inert(text)) if text_tokens is None else text_tokens + 3 * joiners
    request = TextRequest(profile=profile, text=text, max_new_tokens=max_new_tokens,
                          max_context=max_context or profile.max_context,
                          prompt_tokens=estimate_tokens(chat.system, chat.prefix, chat.postfix) + counted)
    check_budget(request, reserve)
    return request


def text_room(profile: Profile, *, max_new_tokens: int, max_context: int | None = None, reserve: int = 0) -> int:
    """How many tokens the text of a request without images may have (``build_text`` accepts up to this)."""
    chat = profile.chat
    template = estimate_tokens(chat.system, chat.prefix, chat.postfix)
    return (max_context or profile.max_context) - 1 - template - max_new_tokens - reserve


def combine_outputs(outputs: list, tokens: int, width: int) -> np.ndarray:
    """Turn an encoder's raw outputs for one frame into (tokens, n·width).

    Several outputs (Qwen3-VL: merger + 3 DeepStack levels) are interleaved
    per token, ``[o0[i], o1[i], o2[i], o3[i]]``: the layout the LLM was
    converted for. Concatenating output-major gives fluent but wrong text.
    """
    rows = []
    for k, out in enumerate(outputs):
        arr = np.asarray(out, dtype=np.float32)
        if arr.size != tokens * width:
            raise ShapeError(f"encoder output {k} has shape {arr.shape}, expected {tokens}×{width} "
                             f"(tokens_per_image × embed_width)")
        rows.append(arr.reshape(tokens, width))
    return np.ascontiguousarray(np.stack(rows, axis=1).reshape(tokens, len(rows) * width))


def token_width(shape: tuple) -> tuple[int, int]:
    """(T, D) from an output shape: the first dim > 1 is T, the next is D.

    This reads both ``[1, T, D]`` and ``[T, D]`` layouts (older zoo encoders).
    """
    dims = [int(d) for d in shape]
    for i, d in enumerate(dims[:-1]):
        if d > 1:
            return d, int(np.prod(dims[i + 1:]))
    raise ShapeError(f"cannot read tokens and width from encoder output shape {tuple(dims)}")


def user_parts(profile: Profile, prompt: str, stamps, n: int, rule: str) -> tuple:
    """The user turn: timestamps, placeholders and the question, in order."""
    if rule == SINGLE:
        parts = []
        if stamps:
            listed = ", ".join(f"{s:.1f}s" for s in stamps)
            parts.append(f"{n} frames taken at {listed}.\n")
        return tuple(parts + [Images(0, n), "\n" + prompt])
    parts = []
    for k in range(n):
        if stamps:
            parts.append(profile.stamp(k + 1, stamps[k]))
        elif n > 1:
            parts.append(f"Image {k + 1}: ")
        parts += [Images(k, 1), "\n"]
    return tuple(parts + [prompt])


def build(profile: Profile, prompt: str, embeddings: np.ndarray, stamps=None, *, rule: str = PER_IMAGE,
          max_new_tokens: int, max_context: int | None = None, reserve: int = 0) -> Request:
    """Check shapes and budget, then freeze everything a runtime needs."""
    if rule not in (PER_IMAGE, SINGLE):
        raise ValueError(f"unknown placeholder rule {rule!r}")
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    check_shape(profile, emb)
    stamps = tuple(float(s) for s in stamps) if stamps else ()
    if stamps and len(stamps) != emb.shape[0]:
        raise ShapeError(f"{len(stamps)} timestamps for {emb.shape[0]} frames")
    parts = user_parts(profile, prompt, stamps, emb.shape[0], rule)
    texts = [inert(p) for p in parts if isinstance(p, str)]
    chat = profile.chat
    prompt_tokens = estimate_tokens(chat.system, chat.prefix, chat.postfix, *texts)
    request = Request(profile=profile, parts=parts, embeddings=emb, stamps=stamps,
                      max_new_tokens=max_new_tokens, max_context=max_context or profile.max_context,
                      prompt_tokens=prompt_tokens)
    check_budget(request, reserve)
    return request


def check_shape(profile: Profile, emb: np.ndarray) -> None:
    expected = (profile.tokens_per_image, profile.encoder_width)
    if emb.ndim != 3 or emb.shape[0] < 1 or emb.shape[1:] != expected:
        raise ShapeError(f"embeddings have shape {emb.shape}, expected (frames, {expected[0]}, {expected[1]}) "
                         f"for profile {profile.name} (tokens_per_image, embed_width × encoder_outputs)")


def check_budget(request: Request | TextRequest, reserve: int) -> None:
    used = request.prompt_tokens + request.vision_tokens + request.max_new_tokens + reserve
    if used >= request.max_context:       # the runtime needs strictly less than the context
        raise BudgetError(
            f"request needs {used} tokens (prompt ≈{request.prompt_tokens} + vision {request.vision_tokens} "
            f"+ max_new_tokens {request.max_new_tokens} + reserve {reserve}) but the context is "
            f"{request.max_context} (use fewer --frames or lower llm.max_new_tokens)")
