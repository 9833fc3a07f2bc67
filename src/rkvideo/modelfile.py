"""The model files a user configured: "this file is wrong" told apart from "the runtime failed".

Why it matters: the kind of an error decides the exit status, and the status decides what systemd
does. A runtime reports a bad file in its own words and often with the same result as a failure
that can pass — RKNNLite's −1, llama.cpp's NULL model, ONNX Runtime's exception — so without this
a corrupt model or a GGUF named ``.onnx`` made ``rkvideo watch`` exit 1 and the unit restart it
every ten seconds, forever. At load time each runtime now raises ``ModelFileError`` (a usage
error, status 2: systemd does not restart) for what is wrong with the FILE: missing, a folder,
unreadable, empty, the wrong kind of model, or a file its parser rejects (corrupt, truncated); and
keeps ``RuntimeFailure`` (status 1, restarted) for what fails while running: no NPU memory left, a
context that does not fit, a library that does not load.

``check`` looks at the file before a runtime does. The only signature it reads is GGUF's ("GGUF"
in the first four bytes, from the GGUF specification), so it can say "this is an LLM, not a vision
encoder" either way round; RKNN, RKLLM and ONNX files have no signature rkvideo relies on, and their
runtimes' parse errors are classed instead.
"""
from __future__ import annotations

import os
import stat

from .errors import UsageError

GGUF_MAGIC = b"GGUF"


class ModelFileError(UsageError):
    """A configured model file cannot be what its setting needs; the message names the file and the key."""


def check(path, setting: str, *, gguf: bool, need: str) -> None:
    """Refuse ``path`` for ``setting`` ("model.llm") unless it is a readable, non-empty regular file,
    and a GGUF file exactly when ``gguf``. ``need`` says what the setting wants, for the message
    ("a vision encoder (.rknn or .onnx)")."""
    check_file(path, setting, need)
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{path}: the model file is empty (0 bytes): copy or convert it again ({setting})")
    with open(path, "rb") as f:
        head = f.read(len(GGUF_MAGIC))
    if head == GGUF_MAGIC and not gguf:
        raise ModelFileError(f"{path}: this is a GGUF file (an LLM for llama.cpp), not {need} ({setting}; the "
                             f"GGUF belongs in model.llm)")
    if gguf and head != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF file (it does not start with 'GGUF'; {setting} must be the "
                             f"language model converted to GGUF — is this the vision encoder?)")


def check_file(path, setting: str, need: str) -> None:
    """``path`` is a regular file this user can open; ``setting`` may name the config file too
    ("model.vision in /etc/rkvideo/config.toml")."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found ({setting})") from None
    except OSError as exc:          # e.g. a parent folder this user may not search
        raise ModelFileError(f"{path}: cannot reach the model file: {exc.strerror} ({setting})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(f"{path}: is a folder, not a model file ({setting} must name {need} inside it)")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{path}: not a regular file ({setting} must name {need})")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file: {exc.strerror} (let this user read it; "
                             f"{setting})") from None
