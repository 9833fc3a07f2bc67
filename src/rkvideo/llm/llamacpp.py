"""The llama.cpp LLM runtime (GGUF files), through llama-cpp-python's low-level API.

Why the low-level batch API and not ``Llama.create_completion``: rkvideo has
the vision embeddings already (from the ONNX or RKNN encoder), and only the
batch API lets them go in as rows (``llama_batch_init(n, n_embd, 1)``)
between the token ids of the prompt, in the place the image tags say. The
high-level API only takes text. llama-cpp-python is pinned in the [cpu]
extra because this API changes between releases.

How one request is fed (``Request`` from ``assemble``):

* the chat template pieces of the profile around the user turn, tokenized by
  the model's own tokenizer with special tokens parsed (so the tags are the
  model's special ids); the text of the user turn (question, timestamps) is
  tokenized with special tokens OFF, so ``<|im_end|>`` typed into a question
  stays text and cannot close the turn;
* per image: the start-tag tokens, the frame's T embedding rows, the end-tag
  tokens;
* positions: one per token for ordinary models. Qwen2-VL-family models
  (rope type M-RoPE) take four per token, section-major: for the image rows
  ``t = p0, row = p0 + r, col = p0 + c, 0`` on the token grid, and text after
  the image continues at ``p0 + max(grid_h, grid_w)`` — the layout Qwen2-VL
  was trained with. Text batches give one position; llama.cpp copies it to
  the sections.

A text-only request (``assemble.TextRequest``, the timeline's summary) is
the chat template around its text, token ids only.

The KV cache is cleared before every request, so a second clip can never see
the first (the "keeps describing the first image" bug of stateful runtimes).
Sampling is rebuilt per request from the config and its seed, so the same
request gives the same text on a fresh or a reused model. ``abort()`` sets a
flag that is checked between prompt chunks and between generated tokens.

llama.cpp logs every tensor it loads; rkvideo keeps only its error lines, to
put the cause into its own one-line errors. ``RKVIDEO_LLAMA_LOG=1`` shows
the full log on stderr.

A file that is not a GGUF, or one llama.cpp cannot load (truncated, corrupt,
an architecture it does not know), or whose vocabulary lacks the profile's
image tags, is a ``ModelFileError`` (the configuration is wrong, exit status
2); a context that cannot be created or a failed decode is an ``LLMError``.
"""
from __future__ import annotations

import ctypes
import itertools
import math
import os
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from .. import assemble, modelfile
from .base import CPU_EXTRA_HINT, Generation, Interrupted, LLMError, Utf8Stream

# The ggml_log_level we keep (GGML_LOG_LEVEL_ERROR; llama-cpp-python's own comment
# still lists the old numbering): errors, to explain a failed call.
_LOG_ERROR = 4
_errors: deque = deque(maxlen=8)
_log_callback = None
_backend_ready = False


def _lib():
    try:
        import llama_cpp
    except ImportError:
        raise LLMError(f"llama-cpp-python is not installed; {CPU_EXTRA_HINT}") from None
    except OSError as exc:  # the package is there but libllama.so cannot be loaded
        raise LLMError(f"llama-cpp-python is installed but its library does not load ({exc}); "
                       f"reinstall it: pip install --force-reinstall 'rkvideo[cpu]'") from None
    return llama_cpp


def _setup(L) -> None:
    """Route llama.cpp's log to a small buffer (it prints every tensor otherwise)."""
    global _log_callback, _backend_ready
    if _log_callback is None:
        def keep_errors(level, text, _user):
            if level == _LOG_ERROR and text:
                _errors.append(text.decode("utf-8", "replace").strip())
        _log_callback = L.llama_log_callback(keep_errors)  # referenced for the process lifetime
        if os.environ.get("RKVIDEO_LLAMA_LOG") != "1":
            L.llama_log_set(_log_callback, ctypes.c_void_p(0))
    if not _backend_ready:
        L.llama_backend_init()
        _backend_ready = True


def _last_error() -> str:
    """The first error llama.cpp logged since the call began: the root cause, usually."""
    if not _errors:
        return ""
    return f" ({_errors[0].splitlines()[0]})"


def _fill(pointer, values) -> None:
    """Copy int32 ``values`` (any shape, flattened) to a C int32 array."""
    data = np.ascontiguousarray(values, dtype=np.int32)
    ctypes.memmove(pointer, data.ctypes.data, data.nbytes)


def grid(tokens: int) -> tuple[int, int]:
    """The token grid (rows, cols) of one image: square when T is, else the nearest factors."""
    rows = math.isqrt(tokens)
    while tokens % rows:
        rows -= 1
    return rows, tokens // rows


def image_positions(pos: int, count: int, mrope: bool) -> tuple[np.ndarray, int]:
    """Positions of ``count`` image rows starting at ``pos``, and where the text after them starts.

    M-RoPE: 4 sections (t, row, col, unused) over the token grid, text resumes
    at ``pos + max(rows, cols)``. Otherwise one position per row.
    """
    if not mrope:
        return (pos + np.arange(count))[None], pos + count
    grid_h, grid_w = grid(count)
    row, col = np.divmod(np.arange(count), grid_w)
    sections = np.stack([np.full(count, pos), pos + row, pos + col, np.zeros(count, int)])
    return sections, pos + max(grid_h, grid_w)


class LlamaCpp:
    """One loaded GGUF model (the ``LLM`` protocol); ``generate`` runs one request at a time."""

    placeholder_rule = assemble.PER_IMAGE     # one <image> per frame, each with its timestamp

    def __init__(self, path: str, config, profile):
        L = self.L = _lib()
        _setup(L)
        self.path = str(path)
        self.profile = profile
        self.settings = config.llm
        self.model = self.ctx = None
        self._stop = False
        modelfile.check(self.path, "model.llm", gguf=True, need="a GGUF LLM")
        params = L.llama_model_default_params()
        _errors.clear()
        self.model = L.llama_model_load_from_file(os.fsencode(self.path), params)
        if not self.model:
            raise modelfile.ModelFileError(f"{self.path}: llama.cpp cannot load this GGUF{_last_error()} "
                                           f"(is it a complete GGUF LLM file? model.llm)")
        try:
            self._open_context()
            self._read_model()
        except BaseException:
            self.close()
            raise

    def _open_context(self) -> None:
        L = self.L
        params = L.llama_context_default_params()
        self.n_ctx = int(self.profile.max_context)
        threads = self.settings.threads or os.cpu_count() or 1
        params.n_ctx = self.n_ctx
        params.n_batch = params.n_ubatch = min(512, self.n_ctx)
        params.n_threads = params.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise LLMError(f"{self.path}: llama.cpp cannot create a {self.n_ctx}-token context{_last_error()} "
                           f"(lower model.max_context)")
        self.n_batch = int(L.llama_n_batch(self.ctx))
        self.memory = L.llama_get_memory(self.ctx)

    def _read_model(self) -> None:
        L = self.L
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        # Qwen3-VL GGUFs take the DeepStack rows too: the input width is n_embd × (1 + deepstack layers).
        self.input_width = int(L.llama_model_n_embd_inp(self.model))
        self.arch = self._meta("general.architecture")
        # The model decides how positions are read: M-RoPE models need four per token.
        self.mrope = int(L.llama_model_rope_type(self.model)) in (L.LLAMA_ROPE_TYPE_MROPE,
                                                                 L.LLAMA_ROPE_TYPE_IMROPE)
        start, end = self.tokenize(self.profile.img_start), self.tokenize(self.profile.img_end)
        if len(start) + len(end) > self.profile.tag_tokens:
            raise modelfile.ModelFileError(
                f"{self.path}: the image tags {self.profile.img_start!r} / {self.profile.img_end!r} are "
                f"{len(start)} + {len(end)} tokens in this model's vocabulary, profile {self.profile.name} "
                f"expects {self.profile.tag_tokens} in all (wrong profile for this GGUF, or set "
                f"model.img_start / model.img_end to the model's own tags)")
        self.tags = (start, end)

    def _meta(self, key: str) -> str:
        buf = ctypes.create_string_buffer(256)
        n = self.L.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else ""

    # ------------------------------------------------------------ tokens

    def tokenize(self, text: str, first: bool = False, special: bool = True) -> list:
        """Token ids of ``text``; special tokens parsed when ``special`` (template pieces and tags), not
        for plain text (what the user wrote); BOS only if ``first`` and the model wants one."""
        if not text:
            return []
        data = text.encode("utf-8")
        room = len(data) + 8
        for _ in range(2):
            ids = (self.L.llama_token * room)()
            n = self.L.llama_tokenize(self.vocab, data, len(data), ids, room, first, special)
            if n >= 0:
                return list(ids[:n])
            room = -n
        raise LLMError(f"{self.path}: cannot tokenize {text[:40]!r}")

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:max(n, 0)]

    def segments(self, request) -> list:
        """The whole prompt in order: ("tokens", ids) and ("image", rows) items. Template pieces and
        tags are markup (special tokens parsed); the request's text pieces are plain text."""
        chat = self.profile.chat
        start, end = self.profile.img_start, self.profile.img_end
        pieces, items = [(chat.system + chat.prefix, True)], []
        for part in request.parts:
            if isinstance(part, str):
                pieces.append((part, False))
                continue
            for k in range(part.first, part.first + part.count):
                pieces.append((start, True))
                items.append(("tokens", pieces))
                items.append(("image", request.embeddings[k]))
                pieces = [(end, True)]
        pieces.append((chat.postfix, True))
        items.append(("tokens", pieces))
        out, first = [], True
        for kind, value in items:
            if kind == "tokens":
                value = self._tokens(value, first)
                first = False
                if not value:
                    continue
            out.append((kind, value))
        return out

    def _tokens(self, pieces: list, first: bool) -> list:
        """Token ids of (text, special) pieces in order, neighbours of one kind tokenized together."""
        ids: list = []
        for special, group in itertools.groupby(pieces, key=lambda piece: piece[1]):
            ids += self.tokenize("".join(text for text, _ in group), first and not ids, special)
        return ids

    # ----------------------------------------------------------- decoding

    def _decode(self, batch, what: str) -> None:
        rc = self.L.llama_decode(self.ctx, batch)
        if rc == 2:
            raise Interrupted()
        if rc != 0:
            raise LLMError(f"{self.path}: llama_decode failed on {what} (code {rc}){_last_error()}")

    def _feed_tokens(self, ids: list, pos: int, last: bool) -> int:
        for at in range(0, len(ids), self.n_batch):
            self._check_abort()
            chunk = ids[at:at + self.n_batch]
            n = len(chunk)
            batch = self.L.llama_batch_init(n, 0, 1)
            try:
                batch.n_tokens = n
                _fill(batch.token, chunk)
                _fill(batch.pos, pos + at + np.arange(n))
                for i in range(n):
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = last and at + i == len(ids) - 1
                self._decode(batch, "the prompt text")
            finally:
                self.L.llama_batch_free(batch)
        return pos + len(ids)

    def _feed_image(self, rows: np.ndarray, pos: int, last: bool) -> int:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        count, width = rows.shape
        sections, after = image_positions(pos, count, self.mrope)
        for at in range(0, count, self.n_batch):
            self._check_abort()
            chunk = rows[at:at + self.n_batch]
            n = len(chunk)
            # M-RoPE batches need room for 4 positions per row: allocate 4·n rows, use n.
            batch = self.L.llama_batch_init(n * len(sections), width, 1)
            try:
                batch.n_tokens = n
                ctypes.memmove(batch.embd, chunk.ctypes.data, chunk.nbytes)
                # Section-major: all t positions, then all rows, all cols, zeros.
                _fill(batch.pos, sections[:, at:at + n])
                for i in range(n):
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = last and at + i == count - 1
                self._decode(batch, "the image embeddings")
            finally:
                self.L.llama_batch_free(batch)
        return after

    def _sampler(self):
        L, s = self.L, self.settings
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if s.repeat_penalty and s.repeat_penalty != 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(self.n_vocab, 64, s.repeat_penalty,
                                                                            0.0, 0.0))
        if s.top_k == 1 or s.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            if s.top_k > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(s.top_k))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(s.top_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(s.temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(s.seed))
        return chain

    def _check_abort(self) -> None:
        if self._stop:
            raise Interrupted()

    # ---------------------------------------------------------- interface

    def generate(self, request, on_text: Callable[[str], None] | None = None) -> Generation:
        return self._guarded(lambda: self._generate(self._image_segments(request), request.max_new_tokens, on_text))

    def generate_text(self, request, on_text: Callable[[str], None] | None = None) -> Generation:
        """A request without images: the chat template around ``request.text``, tokens only."""
        def run():
            self._open_check()
            chat = self.profile.chat
            # The text is plain text (special tokens off), the template around it markup.
            ids = self._tokens([(chat.system + chat.prefix, True), (request.text, False), (chat.postfix, True)],
                               True)
            return self._generate([("tokens", ids)], request.max_new_tokens, on_text)
        return self._guarded(run)

    def _guarded(self, run) -> Generation:
        _errors.clear()
        try:
            return run()
        finally:
            # An abort applies to the generation running (or about to run) when it was asked.
            self._stop = False

    def _open_check(self) -> None:
        if self.ctx is None:
            raise LLMError(f"{self.path}: the model is closed")

    def _image_segments(self, request) -> list:
        self._open_check()
        if request.width != self.input_width:
            raise LLMError(f"{self.path}: embeddings are {request.width} floats wide, the model takes "
                           f"{self.input_width} (model.embed_width / model.encoder_outputs)")
        return self.segments(request)

    def _generate(self, segments: list, max_new_tokens: int, on_text) -> Generation:
        self._check_abort()
        n_prompt = sum(len(v) for _, v in segments)
        if n_prompt + max_new_tokens > self.n_ctx:
            raise LLMError(f"{self.path}: the prompt is {n_prompt} tokens; with max_new_tokens "
                           f"{max_new_tokens} it exceeds the {self.n_ctx}-token context "
                           f"(use fewer --frames or lower llm.max_new_tokens)")
        # A fresh context state for every request: nothing of the previous clip survives.
        self.L.llama_memory_clear(self.memory, True)
        text, stream = [], Utf8Stream()
        timings = {"prefill": 0.0, "generate": 0.0}

        def emit(chunk: str) -> None:
            if chunk:
                text.append(chunk)
                if on_text:
                    on_text(chunk)

        def partial(stop, count):
            return Generation(text="".join(text), prompt_tokens=n_prompt, new_tokens=count,
                              timings=dict(timings), stop=stop)

        t0 = time.perf_counter()
        try:
            pos = self._prefill(segments)
        except Interrupted:
            timings["prefill"] = time.perf_counter() - t0
            raise Interrupted(partial("abort", 0)) from None
        t1 = time.perf_counter()
        timings["prefill"] = t1 - t0
        count, stop = self._decode_tokens(pos, max_new_tokens, lambda piece: emit(stream.feed(piece)))
        timings["generate"] = time.perf_counter() - t1
        emit(stream.flush())
        if stop == "abort":
            raise Interrupted(partial("abort", count))
        return partial(stop, count)

    def _prefill(self, segments) -> int:
        """Feed the whole prompt, logits for its last token only; the position after it."""
        pos = 0
        for i, (kind, value) in enumerate(segments):
            last = i == len(segments) - 1
            pos = self._feed_tokens(value, pos, last) if kind == "tokens" else self._feed_image(value, pos, last)
        return pos

    def _decode_tokens(self, pos: int, limit: int, on_piece: Callable[[bytes], None]) -> tuple[int, str]:
        """Sample up to ``limit`` tokens after the prompt, each piece to ``on_piece``; (count, stop)."""
        sampler = self._sampler()
        batch = self.L.llama_batch_init(1, 0, 1)
        count, stop = 0, "length"
        try:
            while count < limit:
                if self._stop:
                    stop = "abort"
                    break
                token = self.L.llama_sampler_sample(sampler, self.ctx, -1)
                if self.L.llama_vocab_is_eog(self.vocab, token):
                    stop = "eos"
                    break
                count += 1
                on_piece(self.piece(token))
                if count == limit:
                    break
                batch.n_tokens = 1
                batch.token[0] = token
                batch.pos[0] = pos
                batch.n_seq_id[0] = 1
                batch.seq_id[0][0] = 0
                batch.logits[0] = True
                try:
                    self._decode(batch, "a generated token")
                except Interrupted:
                    stop = "abort"
                    break
                pos += 1
        finally:
            self.L.llama_batch_free(batch)
            self.L.llama_sampler_free(sampler)
        return count, stop

    def abort(self) -> None:
        """Stop the running generation, or the next one if none runs; it raises Interrupted.

        A plain attribute, not an Event: safe to set from a signal handler.
        """
        self._stop = True

    def close(self) -> None:
        L = self.L
        if self.ctx:
            L.llama_free(self.ctx)
        if self.model:
            L.llama_model_free(self.model)
        self.ctx = self.model = None


def open_llamacpp(path: str, config, profile) -> LlamaCpp:
    return LlamaCpp(path, config, profile)
