"""Build and read ``stub_rkllmrt.c``, the test double of librkllmrt.so.

``build(abi, version, directory)`` compiles the stub with the system C compiler
for one struct layout ("1.2" or "1.3"); ``version`` is the version literal put
in the library (or None for a library that carries none, to exercise the
"cannot tell the layout" path). ``state(path)`` returns what the stub recorded.
"""
from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("stub_rkllmrt.c")
ABI = {"1.2": "12", "1.3": "13"}


def compiler() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def build(abi: str, version: str | None, directory) -> Path:
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (gcc/cc) on PATH")
    tag = (version or "none").replace(".", "_")
    out = Path(directory) / f"abi{ABI[abi]}_{tag}" / "librkllmrt.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [cc, "-shared", "-fPIC", "-O0", "-Wall", "-Werror", f"-DSTUB_ABI={ABI[abi]}", "-o", str(out), str(SOURCE)]
    if version:
        cmd.insert(-3, f'-DSTUB_VERSION="{version}"')
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def _lib(path):
    lib = ctypes.CDLL(str(path))        # the same handle the binding loaded (dlopen is refcounted)
    lib.stub_state.restype = ctypes.c_char_p
    lib.stub_state.argtypes = []
    lib.stub_reset.restype = None
    return lib


def state(path) -> dict:
    return json.loads(_lib(path).stub_state().decode("utf-8"))


def reset(path) -> None:
    _lib(path).stub_reset()


def write_model(path, **keys) -> Path:
    """A stand-in .rkllm: the key=value lines the stub reads (see stub_rkllmrt.c)."""
    lines = []
    for key, value in keys.items():
        if isinstance(value, str):
            value = value.replace("\n", "\\n")
        lines.append(f"{key}={value}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)
