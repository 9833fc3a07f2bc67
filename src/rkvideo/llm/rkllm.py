"""The RKLLM runtime (``librkllmrt.so``) through ctypes: the LLM half of the board path.

Why ctypes and no C extension: the runtime is a closed binary that users copy
onto the board, and rkvideo must install with pip alone. The price is that
nothing checks the struct layouts for us — a wrong offset does not fail, it
passes garbage (a wrong image count, a tag pointer read as a float). So the
layouts below are written field by field from the byte tables of
docs/board.md, "RKLLM struct layouts", and the tests compare every offset and
size against those tables and drive the binding through a C stub compiled
from the same tables.

Two ABIs are supported: runtime 1.2.1–1.2.3 ("1.2") and 1.3.0 ("1.3").
Older runtimes (1.1.x, 1.2.0, 1.2.1b1) put the input union at a different
offset and have a ``void`` callback; they are refused. The exported symbols
tell "older than 1.2.1" apart but cannot tell 1.2.x from 1.3.0 (no function
was added in 1.3.0), and the runtime prints its version only inside
``rkllm_init`` — after a layout had to be chosen. So the layout is the
setting ``llm.runtime = "1.2" | "1.3"``. With ``"auto"`` rkvideo looks in the
file for NUL-terminated strings that are exactly a version number
(``1.2.3``, ``v1.3.0``): one that names a supported release picks its layout;
none, several or an unsupported one make it refuse to guess. That a real
librkllmrt.so keeps its version as such a separate string (the argument of
its ``rkllm-runtime version: %s`` banner) is an assumption, UNVERIFIED: no
real binary was available, and it is proven only on the C stub in tests/,
which is built that way. If the version is inlined in a longer string,
"auto" finds none and asks for ``llm.runtime``; if the file holds an
unrelated string that happens to equal a release, "auto" would pick that
release's layout. Hence the layout and how it was decided are printed once at
load, next to the runtime's own version banner, for the user to compare.

One request is one ``rkllm_run``: a multimodal input with the user text
(``<image>`` placeholders), one contiguous frame-major float32 buffer of
N × T × E, T tokens per image, N images, the encoder's input size, the
family's image tags, no history (and the KV cache cleared first). The chat
template is the profile's, given once after ``rkllm_init`` with
``rkllm_set_chat_template`` (in every runtime rkvideo drives): the runtime
cannot parse SmolVLM's template from the model file at all, and this way the
text the model sees is the one rkvideo documents and the llama.cpp runtime
builds, for every family. The turn itself is not wrapped here.

The family's minimum runtime (``Profile.min_runtime``) is named when
``rkllm_init`` fails, and a version string in the library below it is
reported at load. ``rkllm_abort`` from another thread stops a running
``rkllm_run`` on the same handle, and a handle runs one inference at a time
(docs/board.md, "Abort and threading"): a lock serialises ``generate``.
``rkllm_run`` blocks, so it runs on a helper thread while the
calling thread waits: that keeps Ctrl-C and SIGTERM deliverable (a signal
handler cannot run while the main thread is inside a C call), and the wait
turns them into ``rkllm_abort``. The handle is destroyed in ``close()``
whatever happened.

A model file that cannot be an ``.rkllm`` (missing, a folder, empty, a GGUF)
is refused before the runtime sees it, as a ``ModelFileError`` (exit status
2). A failed ``rkllm_init`` stays an ``LLMError`` (status 1): its return code
is the same for a corrupt ``.rkllm`` as for too little memory, and the file
format has no documented signature to tell them apart (docs/board.md).
A text-only request (the timeline's summary over the captions) is one
``rkllm_run`` with the prompt input type: the text in ``prompt_input``, the
same role, no history and a cleared KV cache.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import threading
import time
from ctypes import (CFUNCTYPE, POINTER, Structure, Union, byref, c_bool, c_char_p, c_float, c_int, c_int8,
                    c_int32, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p)
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import assemble, modelfile
from .base import Generation, Interrupted, LLMError, Utf8Stream

log = logging.getLogger(__name__)

LIBRARY = "librkllmrt.so"
SEARCH_DIRS = ("/usr/lib", "/usr/local/lib")
VERSIONS = ("1.2", "1.3")

# LLMCallState
RUN_NORMAL, RUN_WAITING, RUN_FINISH, RUN_ERROR = 0, 1, 2, 3
INPUT_PROMPT, INPUT_MULTIMODAL = 0, 3     # RKLLMInputType (docs/board.md, "Text-only input")
INFER_GENERATE = 0

# Symbols added in 1.2.1 (ABI "C"); 1.3.0 kept them. Their absence means a
# runtime whose RKLLMInput and callback this binding cannot drive.
SINCE_121 = ("rkllm_get_kv_cache_size", "rkllm_set_function_tools", "rkllm_set_cross_attn_params")
REQUIRED = ("rkllm_createDefaultParam", "rkllm_init", "rkllm_run", "rkllm_abort", "rkllm_destroy",
            "rkllm_clear_kv_cache", "rkllm_set_chat_template")


# ----------------------------------------------------------------------------------------------
# Struct layouts for 1.2.1–1.2.3 and 1.3.0 (docs/board.md, "RKLLM struct layouts"). Field order is the ABI:
# no _pack_.

def _build(version: str) -> SimpleNamespace:
    class RKLLMExtendParam(Structure):          # 120 B, both versions
        _fields_ = [("base_domain_id", c_int32), ("embed_flash", c_int8), ("enabled_cpus_num", c_int8),
                    ("enabled_cpus_mask", c_uint32), ("n_batch", c_uint8), ("use_cross_attn", c_int8),
                    ("reserved", c_uint8 * 104)]

    head = [("model_path", c_char_p), ("max_context_len", c_int32), ("max_new_tokens", c_int32),
            ("top_k", c_int32), ("n_keep", c_int32), ("top_p", c_float), ("temperature", c_float),
            ("repeat_penalty", c_float), ("frequency_penalty", c_float), ("presence_penalty", c_float),
            ("mirostat", c_int32), ("mirostat_tau", c_float), ("mirostat_eta", c_float),
            ("skip_special_token", c_bool)]

    class RKLLMParam(Structure):                # 208 B (1.2) / 184 B (1.3)
        if version == "1.2":
            _fields_ = head + [("is_async", c_bool), ("img_start", c_char_p), ("img_end", c_char_p),
                               ("img_content", c_char_p), ("extend_param", RKLLMExtendParam)]
        else:
            _fields_ = head + [("ignore_eos_token", c_bool), ("is_async", c_bool),
                               ("extend_param", RKLLMExtendParam)]

    class RKLLMEmbedInput(Structure):
        _fields_ = [("embed", POINTER(c_float)), ("n_tokens", c_size_t)]

    class RKLLMTokenInput(Structure):
        _fields_ = [("input_ids", POINTER(c_int32)), ("n_tokens", c_size_t)]

    ns = {}
    if version == "1.2":
        class RKLLMMultiModalInput(Structure):  # 48 B
            _fields_ = [("prompt", c_char_p), ("image_embed", POINTER(c_float)), ("n_image_tokens", c_size_t),
                        ("n_image", c_size_t), ("image_width", c_size_t), ("image_height", c_size_t)]
    else:
        # The 1.3.0 header nests two anonymous structs; any type name gives the same layout.
        class RKLLMImageInput(Structure):       # 64 B
            _fields_ = [("image_embed", POINTER(c_float)), ("n_image_tokens", c_size_t), ("n_image", c_size_t),
                        ("image_start", c_char_p), ("image_end", c_char_p), ("image_content", c_char_p),
                        ("image_width", c_size_t), ("image_height", c_size_t)]

        class RKLLMVideoInput(Structure):       # 72 B
            _fields_ = [("video_embed", POINTER(c_float)), ("n_frame_tokens", c_size_t),
                        ("n_frame_per_video", c_size_t), ("n_video", c_size_t), ("video_start", c_char_p),
                        ("video_end", c_char_p), ("video_content", c_char_p), ("frame_width", c_size_t),
                        ("frame_height", c_size_t)]

        class RKLLMMultiModalInput(Structure):  # 144 B
            _fields_ = [("prompt", c_char_p), ("image", RKLLMImageInput), ("video", RKLLMVideoInput)]
        ns.update(RKLLMImageInput=RKLLMImageInput, RKLLMVideoInput=RKLLMVideoInput)

    class RKLLMInputUnion(Union):
        _fields_ = [("prompt_input", c_char_p), ("embed_input", RKLLMEmbedInput),
                    ("token_input", RKLLMTokenInput), ("multimodal_input", RKLLMMultiModalInput)]

    class RKLLMInput(Structure):                # 64 B (1.2) / 160 B (1.3); union at 16
        _anonymous_ = ("input",)
        _fields_ = [("role", c_char_p), ("enable_thinking", c_bool), ("input_type", c_int),
                    ("input", RKLLMInputUnion)]

    class RKLLMLoraParam(Structure):
        _fields_ = [("lora_adapter_name", c_char_p)]

    class RKLLMPromptCacheParam(Structure):
        _fields_ = [("save_prompt_cache", c_int), ("prompt_cache_path", c_char_p)]

    class RKLLMLoraAdapter(Structure):
        _fields_ = [("lora_adapter_path", c_char_p), ("lora_adapter_name", c_char_p), ("scale", c_float)]

    class RKLLMCrossAttnParam(Structure):
        _fields_ = [("encoder_k_cache", POINTER(c_float)), ("encoder_v_cache", POINTER(c_float)),
                    ("encoder_mask", POINTER(c_float)), ("encoder_pos", POINTER(c_int32)), ("num_tokens", c_int)]

    infer = [("mode", c_int), ("lora_params", POINTER(RKLLMLoraParam)),
             ("prompt_cache_params", POINTER(RKLLMPromptCacheParam))]
    if version == "1.3":
        class RKLLMSamplingParam(Structure):    # 36 B
            _fields_ = [("top_k", c_int32), ("top_p", c_float), ("temperature", c_float),
                        ("repeat_penalty", c_float), ("frequency_penalty", c_float),
                        ("presence_penalty", c_float), ("mirostat", c_int32), ("mirostat_tau", c_float),
                        ("mirostat_eta", c_float)]
        infer += [("sampling_params", POINTER(RKLLMSamplingParam)), ("keep_history", c_int),
                  ("max_new_tokens", c_int32)]
        ns["RKLLMSamplingParam"] = RKLLMSamplingParam
    else:
        infer += [("keep_history", c_int)]

    class RKLLMInferParam(Structure):           # 32 B (1.2) / 40 B (1.3)
        _fields_ = infer

    class RKLLMResultLastHiddenLayer(Structure):
        _fields_ = [("hidden_states", POINTER(c_float)), ("embd_size", c_int), ("num_tokens", c_int)]

    class RKLLMResultLogits(Structure):
        _fields_ = [("logits", POINTER(c_float)), ("vocab_size", c_int), ("num_tokens", c_int)]

    class RKLLMPerfStat(Structure):             # 20 B
        _fields_ = [("prefill_time_ms", c_float), ("prefill_tokens", c_int), ("generate_time_ms", c_float),
                    ("generate_tokens", c_int), ("memory_usage_mb", c_float)]

    class RKLLMResult(Structure):               # 72 B
        _fields_ = [("text", c_char_p), ("token_id", c_int32), ("last_hidden_layer", RKLLMResultLastHiddenLayer),
                    ("logits", RKLLMResultLogits), ("perf", RKLLMPerfStat)]

    # Returns int since 1.2.1: 0 continue, 1 pause (2 = release buffers, 1.3.0).
    LLMResultCallback = CFUNCTYPE(c_int, POINTER(RKLLMResult), c_void_p, c_int)
    if version == "1.3":
        LLMTokenizerCallback = CFUNCTYPE(c_int, c_void_p, c_char_p, c_int32, POINTER(c_int32), c_int32)
        LLMGetEmbedCallback = CFUNCTYPE(c_int, c_void_p, POINTER(c_int32), c_uint64, c_void_p, c_uint64)

        class RKLLMCallback(Structure):         # 48 B
            _fields_ = [("result_callback", LLMResultCallback), ("result_userdata", c_void_p),
                        ("tokenizer_callback", LLMTokenizerCallback), ("tokenizer_userdata", c_void_p),
                        ("embed_callback", LLMGetEmbedCallback), ("embed_userdata", c_void_p)]
        ns.update(LLMTokenizerCallback=LLMTokenizerCallback, LLMGetEmbedCallback=LLMGetEmbedCallback,
                  RKLLMCallback=RKLLMCallback)

    ns.update(RKLLMExtendParam=RKLLMExtendParam, RKLLMParam=RKLLMParam, RKLLMEmbedInput=RKLLMEmbedInput,
              RKLLMTokenInput=RKLLMTokenInput, RKLLMMultiModalInput=RKLLMMultiModalInput,
              RKLLMInputUnion=RKLLMInputUnion, RKLLMInput=RKLLMInput, RKLLMLoraParam=RKLLMLoraParam,
              RKLLMPromptCacheParam=RKLLMPromptCacheParam, RKLLMLoraAdapter=RKLLMLoraAdapter,
              RKLLMCrossAttnParam=RKLLMCrossAttnParam, RKLLMInferParam=RKLLMInferParam,
              RKLLMResultLastHiddenLayer=RKLLMResultLastHiddenLayer, RKLLMResultLogits=RKLLMResultLogits,
              RKLLMPerfStat=RKLLMPerfStat, RKLLMResult=RKLLMResult, LLMResultCallback=LLMResultCallback)
    return SimpleNamespace(version=version, **ns)


_STRUCTS: dict = {}


def structs(version: str) -> SimpleNamespace:
    """The ctypes classes of one runtime ABI, named as in ``rkllm.h`` ("1.2" or "1.3")."""
    if version not in VERSIONS:
        raise ValueError(f"unknown RKLLM runtime layout {version!r} (known: {', '.join(VERSIONS)})")
    if version not in _STRUCTS:
        _STRUCTS[version] = _build(version)
    return _STRUCTS[version]


# ----------------------------------------------------------------------------------------------
# Finding the library and its layout

def library_candidates(configured: str = "", env: dict | None = None, dirs=SEARCH_DIRS) -> list[Path]:
    """Where librkllmrt.so is looked for, in order: the configured path, then the system dirs,
    then $LD_LIBRARY_PATH."""
    if configured:
        return [Path(configured)]
    env = os.environ if env is None else env
    extra = [d for d in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    return [Path(d) / LIBRARY for d in (*dirs, *extra)]


def find_library(config=None, env: dict | None = None, dirs=SEARCH_DIRS) -> Path:
    """The absolute path of librkllmrt.so; LLMError says where it looked and what to set."""
    configured = ""
    if config is not None and config.llm.library:
        configured = str(config.resolve_path(config.llm.library))
    for path in library_candidates(configured, env, dirs):
        try:
            if path.is_file():
                return path.resolve()
        except OSError:     # an unreadable folder on $LD_LIBRARY_PATH: look on
            continue
    if configured:
        raise LLMError(f"{configured}: librkllmrt.so not found (llm.library in "
                       f"{getattr(config, 'source', None) or 'the config'})")
    tried = ", ".join(str(p.parent) for p in library_candidates("", env, dirs))
    raise LLMError(f"{LIBRARY} not found in {tried} (copy rkllm-runtime/Linux/librkllm_api/aarch64/"
                   f"librkllmrt.so from airockchip/rknn-llm to /usr/lib, or set llm.library)")


_VERSION_LITERAL = re.compile(rb"\x00v?(1\.\d+\.\d+(?:[a-z]+\d*)?)\x00")


def inspect_library(path) -> dict:
    """What the file itself says: version literals, whether the ≥1.2.1 symbols exist, the ELF machine.

    Works without loading the library (so ``rkvideo doctor`` can read an aarch64
    file on any machine). Version literals are NUL-terminated strings that are
    exactly a version (``1.2.3``, ``v1.3.0``, ``1.2.1b1``). That the runtime's
    banner ``rkllm-runtime version: %s`` takes its argument from such a string
    is UNVERIFIED (see the module docstring); the C stub in tests/ does.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LLMError(f"{path}: cannot read the RKLLM runtime ({exc.strerror or exc})") from None
    versions = sorted({m.group(1).decode() for m in _VERSION_LITERAL.finditer(data)})
    symbols = {name: (b"\x00" + name.encode() + b"\x00") in data for name in REQUIRED + SINCE_121}
    machine = None
    if data[:4] == b"\x7fELF" and len(data) > 20:
        code = int.from_bytes(data[18:20], "little" if data[5] == 1 else "big")
        machine = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0x03: "x86"}.get(code, hex(code))
    return {"versions": versions, "symbols": symbols, "machine": machine}


# Releases whose layout this binding was checked against (docs/board.md, "RKLLM runtime versions").
# Anything else is refused:
# a 1.2.x-looking literal can also be a bundled library's version (zlib 1.2.13), so the set is exact.
KNOWN_RELEASES = {"1.2.1": "1.2", "1.2.2": "1.2", "1.2.3": "1.2", "1.3.0": "1.3"}
OLDEST_RELEASE = "1.2.1"


def layout_for_version(version: str) -> str | None:
    """The ABI of a runtime release, or None for one this binding cannot drive."""
    return KNOWN_RELEASES.get(version)


def release_of(info: dict, layout: str | None = None) -> str | None:
    """The runtime release, when it can be told: the one supported version string in the library, or
    1.3.0 for layout "1.3" (the only release with it). None when nothing says which 1.2.x it is."""
    known = [v for v in info["versions"] if v in KNOWN_RELEASES]
    if len(known) == 1 and (layout is None or KNOWN_RELEASES[known[0]] == layout):
        return known[0]
    return "1.3.0" if layout == "1.3" else None


def _release_tuple(release: str) -> tuple:
    return tuple(int(part) for part in release.split("."))


def runtime_too_old(release: str | None, minimum: str) -> bool:
    """True only when the release is known and older than ``minimum``."""
    return release is not None and _release_tuple(release) < _release_tuple(minimum)


def requirement(profile, release: str | None) -> str:
    """``profile qwen3-vl-2b (qwen3-vl) needs RKLLM runtime ≥ 1.2.3; this library: 1.2.2``."""
    found = release or "version not known"
    return (f"profile {profile.name} ({profile.family}) needs RKLLM runtime ≥ {profile.min_runtime}; "
            f"this library: {found}")


def choose_layout(setting: str, path, info: dict | None = None) -> tuple[str, str]:
    """(layout, how it was decided). Raises LLMError instead of guessing. ``info``: what
    ``inspect_library(path)`` said, when the caller has it already."""
    info = info or inspect_library(path)
    missing = [s for s in REQUIRED if not info["symbols"][s]]
    if missing:
        raise LLMError(f"{path}: not an RKLLM runtime (missing {', '.join(missing)})")
    if not all(info["symbols"][s] for s in SINCE_121):
        raise LLMError(f"{path}: this librkllmrt.so is older than 1.2.1 (no {SINCE_121[1]}); rkvideo drives "
                       f"runtime 1.2.1–1.2.3 and 1.3.0 — install one of those from airockchip/rknn-llm")
    known = info["versions"]
    layouts = {v: layout_for_version(v) for v in known}
    if setting in VERSIONS:
        found = {layouts[v] for v in known} - {None}
        if found and setting not in found:
            log.warning("%s: llm.runtime = %r but the library contains version string(s) %s; "
                        "a wrong layout passes garbage to the runtime — check llm.runtime",
                        path, setting, ", ".join(known))
        return setting, "from llm.runtime"
    if len(known) == 1 and layouts[known[0]]:
        return layouts[known[0]], f"version string {known[0]} in the library"
    if len(known) == 1:
        raise LLMError(f"{path}: runtime version {known[0]} has a struct layout rkvideo does not know "
                       f"(supported: 1.2.1–1.2.3, 1.3.0); install a supported runtime, or set llm.runtime "
                       f"= \"1.2\" or \"1.3\" if you know it matches one")
    what = f"several version strings ({', '.join(known)})" if known else "no version string"
    raise LLMError(f"{path}: cannot tell the runtime's struct layout ({what} in the file; symbols cannot "
                   f"tell 1.2.x from 1.3.0) — set llm.runtime = \"1.2\" (runtime 1.2.1–1.2.3) or \"1.3\" "
                   f"(runtime 1.3.0) in config.toml; the runtime prints its version when it loads a model")


def load(path, version: str):
    """CDLL by absolute path with every prototype declared (the by-value restype matters)."""
    s = structs(version)
    try:
        lib = ctypes.CDLL(str(Path(path).resolve()))
    except OSError as exc:
        raise LLMError(f"{path}: cannot load the RKLLM runtime: {exc}") from None
    lib.rkllm_createDefaultParam.restype = s.RKLLMParam     # 208/184 B returned by value
    lib.rkllm_createDefaultParam.argtypes = []
    callback_arg = s.LLMResultCallback if version == "1.2" else POINTER(s.RKLLMCallback)
    lib.rkllm_init.argtypes = [POINTER(c_void_p), POINTER(s.RKLLMParam), callback_arg]
    lib.rkllm_run.argtypes = [c_void_p, POINTER(s.RKLLMInput), POINTER(s.RKLLMInferParam), c_void_p]
    lib.rkllm_clear_kv_cache.argtypes = [c_void_p, c_int, POINTER(c_int), POINTER(c_int)]
    lib.rkllm_set_chat_template.argtypes = [c_void_p, c_char_p, c_char_p, c_char_p]
    for name in ("rkllm_abort", "rkllm_destroy"):
        getattr(lib, name).argtypes = [c_void_p]
    for name in ("rkllm_init", "rkllm_run", "rkllm_clear_kv_cache", "rkllm_set_chat_template", "rkllm_abort",
                 "rkllm_destroy"):
        getattr(lib, name).restype = c_int
    return lib


def _announce_layout(library: str, layout: str, how: str) -> None:
    """Say once per load which layout was picked and why: a wrong one fails silently (see above).

    An info line where logging is set up to show it (the watch daemon); otherwise a warning, so
    that it is never lost: ``rkvideo describe`` shows warnings on stderr, next to the runtime's own
    banner. Where it goes is the command line's choice; a stage never writes to the terminal.
    """
    message = f"{library}: RKLLM struct layout {layout} ({how})"
    if how.startswith("version string"):
        message += "; if the runtime's own version line disagrees, set llm.runtime"
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info("%s", message)
    else:
        log.warning("%s", message)


# ----------------------------------------------------------------------------------------------
# The runtime

class RKLLM:
    """One loaded ``.rkllm`` model. ``generate`` runs one request at a time."""

    def __init__(self, path: str, config, profile, npu_vision: bool, library=None, layout: str | None = None):
        self.path = str(path)
        # The file first: a wrong one is the configuration's fault (exit status 2) wherever the library is.
        modelfile.check(self.path, "model.llm", gguf=False, need="an RKLLM model (.rkllm)")
        self.profile = profile
        library = Path(library) if library else find_library(config)
        self.library = str(library)
        info = inspect_library(library)
        if layout:
            self.layout, self.layout_source = layout, "given by the caller"
        else:
            self.layout, self.layout_source = choose_layout(config.llm.runtime, library, info)
        _announce_layout(self.library, self.layout, self.layout_source)
        self.release = release_of(info, self.layout)
        if runtime_too_old(self.release, profile.min_runtime):
            log.warning("%s: %s — rkllm_init will probably fail; install a newer librkllmrt.so from "
                        "airockchip/rknn-llm", self.library, requirement(profile, self.release))
        self.s = structs(self.layout)
        # 1.2.x takes one <image> for all frames; 1.3.0 one per image.
        self.placeholder_rule = assemble.SINGLE if self.layout == "1.2" else assemble.PER_IMAGE
        # The runtime cannot report the embedding width it was converted for: trust the profile,
        # which the pipeline has already checked against the encoder's outputs.
        self.input_width = profile.encoder_width
        self.max_context = int(profile.max_context)
        self.max_new_tokens = int(config.llm.max_new_tokens)
        self.sampling = {"top_k": int(config.llm.top_k), "top_p": float(config.llm.top_p),
                         "temperature": float(config.llm.temperature),
                         "repeat_penalty": float(config.llm.repeat_penalty)}
        self._lock = threading.Lock()           # one generate() at a time
        self._stop = threading.Event()
        self._running = False
        self._handle = c_void_p()
        self._lib = load(library, self.layout)
        # Referenced for the handle's whole lifetime: the runtime keeps the pointer.
        self._callback = self.s.LLMResultCallback(self._on_result)
        self._callbacks = None
        self._run_state = None
        self._keep = []                        # bytes the init params point at
        self._init(npu_vision)

    # -- init ---------------------------------------------------------------------------------
    def _init(self, npu_vision: bool) -> None:
        param = self._lib.rkllm_createDefaultParam()
        model = os.fsencode(self.path)
        self._keep.append(model)
        param.model_path = model
        param.max_context_len = self.max_context
        param.max_new_tokens = self.max_new_tokens
        param.top_k = self.sampling["top_k"]
        param.top_p = self.sampling["top_p"]
        param.temperature = self.sampling["temperature"]
        param.repeat_penalty = self.sampling["repeat_penalty"]
        param.skip_special_token = True
        param.is_async = False
        if self.layout == "1.2":
            # 1.2.x: the image tags are fixed at init; 1.3.0 takes them per call.
            tags = self._tags()
            self._keep += tags
            param.img_start, param.img_end, param.img_content = tags
        else:
            param.ignore_eos_token = False
        # All RKNN contexts live in NPU IOMMU domain 0 (4 GiB); the LLM moves to domain 1
        # whenever the vision encoder runs on the NPU, or loading the encoder fails
        # (docs/board.md, "NPU memory domains").
        param.extend_param.base_domain_id = 1 if npu_vision else 0
        param.extend_param.n_batch = 1
        param.extend_param.use_cross_attn = 0
        self._param = param
        if self.layout == "1.2":
            callback = self._callback
        else:
            self._callbacks = self.s.RKLLMCallback()    # tokenizer/embed callbacks stay NULL
            self._callbacks.result_callback = self._callback
            callback = byref(self._callbacks)
        rc = self._lib.rkllm_init(byref(self._handle), byref(param), callback)
        if rc != 0 or not self._handle.value:
            self._handle = c_void_p()
            raise LLMError(f"{self.path}: rkllm_init failed (return code {rc}; the runtime's log above says why: "
                           f"a model converted for another runtime version or platform — "
                           f"{requirement(self.profile, self.release)} — too little memory, or an NPU driver "
                           f"older than 0.9.8; run `rkvideo doctor`)")
        self._set_chat_template()

    def _set_chat_template(self) -> None:
        """Give the runtime the profile's template (it replaces the one parsed at conversion, and is the
        only one SmolVLM conversions have). A failure destroys the fresh handle."""
        chat = self.profile.chat
        pieces = [chat.system.encode(), chat.prefix.encode(), chat.postfix.encode()]
        self._keep += pieces
        rc = self._lib.rkllm_set_chat_template(self._handle, *pieces)
        if rc != 0:
            self.close()
            raise LLMError(f"{self.path}: rkllm_set_chat_template failed (return code {rc}; the runtime's log "
                           f"above says why)")

    def _tags(self) -> list[bytes]:
        """The family's image start, end and content tags, as the runtime takes them."""
        return [self.profile.img_start.encode(), self.profile.img_end.encode(), self.profile.img_content.encode()]

    # -- one request ----------------------------------------------------------------------------
    def generate(self, request, on_text=None) -> Generation:
        if not self._handle.value:
            raise LLMError(f"{self.path}: the model is closed")
        with self._lock:
            try:
                return self._generate(request, on_text)
            finally:
                # An abort applies to the generation running (or about to run) when it was asked.
                self._stop.clear()

    def generate_text(self, request, on_text=None) -> Generation:
        """A request without images (``assemble.TextRequest``): RKLLM's prompt input."""
        if not self._handle.value:
            raise LLMError(f"{self.path}: the model is closed")
        with self._lock:
            try:
                inp, keep = self._prompt_input(assemble.inert(request.text))     # plain text, as in generate
                return self._run_request(request, inp, keep, on_text)
            finally:
                self._stop.clear()

    def _prompt_input(self, text: str):
        data, role = text.encode("utf-8"), b"user"
        inp = self.s.RKLLMInput()
        inp.role = role
        inp.enable_thinking = False
        inp.input_type = INPUT_PROMPT
        inp.prompt_input = data
        return inp, [data, role]

    def _check(self, request, prompt: str) -> np.ndarray:
        emb = request.embeddings
        if emb.dtype != np.float32 or not emb.flags["C_CONTIGUOUS"] or emb.ndim != 3:
            raise LLMError(f"{self.path}: embeddings must be a C-contiguous float32 (N, T, E) array, "
                           f"got {emb.dtype} {emb.shape}")
        if emb.shape[2] != self.input_width:
            raise LLMError(f"{self.path}: embeddings have {emb.shape[2]} floats per token, the model takes "
                           f"{self.input_width}")
        want = 1 if self.placeholder_rule == assemble.SINGLE else emb.shape[0]
        got = prompt.count(assemble.PLACEHOLDER)
        if got != want:
            raise LLMError(f"{self.path}: the prompt has {got} {assemble.PLACEHOLDER} placeholder(s), "
                           f"runtime {self.layout} needs {want} for {emb.shape[0]} image(s)")
        return emb

    def _generate(self, request, on_text) -> Generation:
        # The runtime parses this string for special tokens and <image>: the user's text goes in inert.
        prompt = request.user_text(assemble.PLACEHOLDER, text=assemble.inert)
        emb = self._check(request, prompt)
        inp, keep = self._multimodal_input(request, prompt, emb)
        return self._run_request(request, inp, keep, on_text)

    def _run_request(self, request, inp, keep: list, on_text) -> Generation:
        """One rkllm_run of ``inp`` (its buffers alive in ``keep``), with this request's limit."""
        if request.max_context > self.max_context:
            raise LLMError(f"{self.path}: the request plans for a {request.max_context}-token context but "
                           f"the model was loaded with {self.max_context}")
        limit = int(request.max_new_tokens)
        # 1.2.x fixes max_new_tokens at init and stops there by itself (FINISH, with perf). Only a
        # lower per-request limit is enforced here, by dropping text past it and aborting the run
        # (the callback itself always returns 0). 1.3.0 takes the limit per call.
        enforce = self.layout == "1.2" and limit < self.max_new_tokens
        if self.layout == "1.2":
            limit = min(limit, self.max_new_tokens)
        rc = self._lib.rkllm_clear_kv_cache(self._handle, 1, None, None)
        if rc != 0:
            raise LLMError(f"{self.path}: rkllm_clear_kv_cache failed (return code {rc})")
        infer, sampling = self._infer(limit)
        state = _RunState(on_text, limit, enforce_limit=enforce)
        rc = self._run_blocking(inp, infer, state)
        del keep, sampling  # the buffers and strings had to live until rkllm_run returned
        generation = state.generation(request)
        if state.ctrl_c is not None:
            # The run is over and the handle intact: now the Ctrl-C goes on to the caller,
            # as it does from the llama.cpp runtime (the CLI exits 130).
            raise state.ctrl_c
        if self._stop.is_set():
            generation.stop = "abort"
            raise Interrupted(generation)
        if state.error:
            raise state.error
        if rc != 0:
            if not state.limit_hit:
                raise LLMError(f"{self.path}: rkllm_run failed (return code {rc})")
            # rkvideo aborted this run at the request's limit: the text is complete, and what the
            # runtime says about being aborted is no failure.
            log.debug("%s: rkllm_run returned %s after the abort at the token limit", self.path, rc)
        return generation

    def _run_blocking(self, inp, infer, state) -> int | None:
        """rkllm_run on a helper thread while this thread waits and relays aborts; its return code,
        or None when an abort cancelled it before it began. A Ctrl-C lands in ``state.ctrl_c``."""
        call = _Call(lambda: self._lib.rkllm_run(self._handle, byref(inp), byref(infer), None))
        launched = False
        self._run_state = state
        self._running = True
        state.start = time.perf_counter()
        try:
            while True:
                # Every step, the thread start included, sits inside the handler: a Ctrl-C
                # landing anywhere becomes rkllm_abort, and a run that had not begun yet is
                # cancelled instead, so no run is ever left going unobserved.
                try:
                    if not launched:
                        launched = True
                        call.thread.start()
                    # Short waits keep this thread able to take Ctrl-C, and re-sending the
                    # abort covers one that arrived before rkllm_run had started.
                    if call.done.wait(0.2):
                        break
                    if self._stop.is_set():
                        if call.cancel():
                            break
                        self._lib.rkllm_abort(self._handle)
                    elif state.limit_hit:
                        self._lib.rkllm_abort(self._handle)
                except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM turned into one by the CLI
                    state.ctrl_c = exc
                    self.abort()
        finally:
            self._running = False
            self._run_state = None
        if call.exc is not None:
            raise LLMError(f"{self.path}: rkllm_run could not be called: {call.exc}")
        return call.rc

    def _multimodal_input(self, request, prompt: str, emb: np.ndarray):
        s = self.s
        text = prompt.encode("utf-8")
        role = b"user"
        keep = [text, role, emb]
        inp = s.RKLLMInput()
        inp.role = role
        inp.enable_thinking = False
        inp.input_type = INPUT_MULTIMODAL
        mm = inp.multimodal_input
        mm.prompt = text
        n, tokens = emb.shape[0], emb.shape[1]
        size = int(self.profile.input_size)
        pointer = emb.ctypes.data_as(POINTER(c_float))
        if self.layout == "1.2":
            mm.image_embed = pointer
            mm.n_image_tokens, mm.n_image = tokens, n
            mm.image_width = mm.image_height = size
        else:
            image = mm.image
            image.image_embed = pointer
            image.n_image_tokens, image.n_image = tokens, n
            image.image_width = image.image_height = size
            tags = self._tags()
            keep += tags
            image.image_start, image.image_end, image.image_content = tags
            # The video sub-struct stays zeroed: frames go in as images (docs/board.md, "Multimodal input").
        return inp, keep

    def _infer(self, limit: int):
        """The inference parameters of one run, and what they point at (kept alive by the caller)."""
        s = self.s
        infer = s.RKLLMInferParam()
        infer.mode = INFER_GENERATE
        infer.keep_history = 0
        sampling = None
        if self.layout == "1.3":
            sampling = s.RKLLMSamplingParam(
                top_k=self.sampling["top_k"], top_p=self.sampling["top_p"],
                temperature=self.sampling["temperature"], repeat_penalty=self.sampling["repeat_penalty"],
                frequency_penalty=self._param.frequency_penalty, presence_penalty=self._param.presence_penalty,
                mirostat=self._param.mirostat, mirostat_tau=self._param.mirostat_tau,
                mirostat_eta=self._param.mirostat_eta)
            infer.sampling_params = ctypes.pointer(sampling)
            infer.max_new_tokens = limit
        return infer, sampling

    # -- the callback -----------------------------------------------------------------------------
    def _on_result(self, result, userdata, state) -> int:
        # Runs on the runtime's thread. Any exception or a None return would hand the
        # runtime an undefined int (1 pauses), so everything is caught and 0 is explicit.
        try:
            run = self._run_state
            if run is not None:
                return run.on_result(result, state, self.path)
        except BaseException as exc:
            if self._run_state is not None and self._run_state.error is None:
                self._run_state.error = LLMError(f"{self.path}: error in the result callback: {exc!r}")
        return 0

    # -- stopping ---------------------------------------------------------------------------------
    def abort(self) -> None:
        """Stop a running generate() soon; safe from a signal handler or another thread."""
        self._stop.set()
        if self._running and self._handle.value:
            self._lib.rkllm_abort(self._handle)

    def close(self) -> None:
        """Destroy the handle; a generate() running on another thread is aborted and waited for."""
        if self._running:
            self.abort()
        with self._lock:
            handle, self._handle = self._handle, c_void_p()
        if not handle.value:
            return
        rc = self._lib.rkllm_destroy(handle)
        if rc != 0:
            log.warning("%s: rkllm_destroy returned %d", self.path, rc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Call:
    """One blocking call on a helper thread. A cancel before it began means it never begins."""

    def __init__(self, function):
        self.function = function
        self.done = threading.Event()
        self.rc = None
        self.exc: BaseException | None = None
        self._gate = threading.Lock()
        self._entered = self._cancelled = False
        self.thread = threading.Thread(target=self._run, name="rkvideo-rkllm", daemon=True)

    def _run(self) -> None:
        try:
            with self._gate:
                if self._cancelled:
                    return
                self._entered = True
            self.rc = self.function()
        except BaseException as exc:  # ctypes argument errors; never expected
            self.exc = exc
        finally:
            self.done.set()

    def cancel(self) -> bool:
        """True when the call had not begun, and now never will."""
        with self._gate:
            if not self._entered:
                self._cancelled = True
            return self._cancelled


class _RunState:
    """What one rkllm_run produced: text (decoded across chunk boundaries), counts, perf, errors."""

    def __init__(self, on_text, limit: int, enforce_limit: bool):
        self.on_text = on_text
        self.limit = limit
        self.enforce_limit = enforce_limit
        self.stream = Utf8Stream()
        self.pieces: list[str] = []
        self.tokens = 0
        self.perf = None
        self.finished = False
        self.limit_hit = False
        self.error: Exception | None = None
        self.ctrl_c: KeyboardInterrupt | None = None   # taken while waiting; re-raised after the run
        self.start = 0.0
        self.first = None
        self.end = None

    def emit(self, piece: str) -> None:
        if not piece:
            return
        self.pieces.append(piece)
        if self.on_text is not None and self.error is None:
            try:
                self.on_text(piece)
            except Exception as exc:   # e.g. a closed stdout; reported after the run
                self.error = exc
                self.on_text = None

    def on_result(self, result, state: int, path: str) -> int:
        if state == RUN_NORMAL:
            if self.limit_hit:
                return 0
            if self.first is None:
                self.first = time.perf_counter()
            text = result.contents.text if result else None
            if text:
                self.emit(self.stream.feed(text))
            self.tokens += 1
            if self.enforce_limit and self.tokens >= self.limit:
                self.limit_hit = True
                self.end = time.perf_counter()
                self.emit(self.stream.flush())
        elif state == RUN_FINISH:
            self.finished = True
            self.end = self.end or time.perf_counter()
            self.emit(self.stream.flush())
            if result:
                p = result.contents.perf
                self.perf = (p.prefill_time_ms, p.prefill_tokens, p.generate_time_ms, p.generate_tokens)
        elif state == RUN_ERROR:
            if self.limit_hit:
                # The answer stopped at the limit is complete; an ERROR now is the runtime
                # reporting the abort rkvideo sent, not a failed generation.
                return 0
            self.end = time.perf_counter()
            if self.error is None:
                self.error = LLMError(f"{path}: the RKLLM runtime reported an error during generation "
                                      f"(see its log above; often the context is full: fewer --frames or a "
                                      f"lower llm.max_new_tokens)")
        # RUN_WAITING: the rest of a UTF-8 character is coming; nothing to show yet.
        return 0

    def generation(self, request) -> Generation:
        self.emit(self.stream.flush())
        text = "".join(self.pieces)
        end = self.end or time.perf_counter()
        if self.perf and not self.limit_hit and (self.perf[1] > 0 or self.perf[3] > 0):
            prefill_ms, prompt_tokens, generate_ms, new_tokens = self.perf
            timings = {"prefill": prefill_ms / 1000.0, "generate": generate_ms / 1000.0}
        else:
            # No perf (runtime stopped early): host clock, and the assembler's token estimate.
            first = self.first or end
            timings = {"prefill": first - self.start, "generate": end - first}
            prompt_tokens = request.prompt_tokens + request.vision_tokens
            new_tokens = self.tokens
        stop = "length" if self.limit_hit or new_tokens >= self.limit else "eos"
        return Generation(text=text, prompt_tokens=int(prompt_tokens), new_tokens=int(new_tokens),
                          timings=timings, stop=stop)


def open_rkllm(path: str, config, profile, npu_vision: bool = False) -> RKLLM:
    """Load ``path`` (.rkllm) with librkllmrt.so found and its layout chosen from ``config``."""
    return RKLLM(path, config, profile, npu_vision)
