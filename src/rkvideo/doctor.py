"""``rkvideo doctor``: one screen telling a board owner what is wrong and how to fix it.

Why a checklist of files instead of just trying to load the models: on the
board, most failures are installation facts that the runtimes report badly or
not at all — a driver older than 0.9.8, ``librknnrt.so`` not in ``/usr/lib``
(the only place RKNNLite looks), a ``librkllmrt.so`` whose struct layout
cannot be told or that is older than the model family needs, a Python for
which rknn-toolkit-lite2 has no wheel (3.13 on Debian 13 images), models that
do not fit the RAM or the NPU's 4 GiB memory domain, CPU/NPU clocks left on a
governor that scales them down (``performance``, or ``userspace`` pinned at
the maximum as Rockchip's ``fix_freq_rk3588.sh`` does, are fine). Each is one line,
OK / WARN / FAIL, with the fix; only a FAIL makes the report fail.
The checks return records (``Report``); the command line prints them.

Every path is read through ``Host`` (the filesystem root, library dirs,
environment, dmesg), so the checks run against a fake tree in tests.
"""
from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import config as config_mod, models

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MIN_DRIVER = (0, 9, 8)
GIB = 1 << 30


@dataclass
class Check:
    name: str
    status: str
    message: str
    fix: str = ""


def _dmesg() -> str | None:
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _exists(path: Path, file: bool = False) -> bool | None:
    """Whether ``path`` exists (``file``: is a regular file); None, falsy like "missing", when a
    folder above it cannot be read. Path.exists()/is_file() raise PermissionError there instead of
    answering (Python 3.11; /sys/kernel/debug is 0700), which would end doctor in a traceback."""
    try:
        return path.is_file() if file else path.exists()
    except OSError:
        return None


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Host:
    """The machine being checked. Tests point ``root`` at a fake tree."""
    root: Path = Path("/")
    lib_dirs: tuple = ("/usr/lib", "/usr/local/lib")
    env: dict = field(default_factory=lambda: dict(os.environ))
    machine: str = field(default_factory=platform.machine)
    kernel: str = field(default_factory=platform.release)
    is_root: bool = field(default_factory=lambda: hasattr(os, "geteuid") and os.geteuid() == 0)
    dmesg: Callable[[], str | None] = _dmesg
    has_module: Callable[[str], bool] = _has_module
    python: tuple = tuple(sys.version_info[:3])

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        """File text; None if missing; PermissionError propagates (root needed)."""
        try:
            return self.path(absolute).read_text(errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def glob(self, pattern: str) -> list[Path]:
        return sorted(Path(p) for p in glob.glob(str(self.path(pattern))))


def _version(text: str) -> tuple | None:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else None


def _dotted(version: tuple) -> str:
    return ".".join(str(v) for v in version)


# ------------------------------------------------------------------------------------------------
# The checks

NOT_A_BOARD_FIX = ("the NPU path (.rknn + .rkllm) runs only on an RK3588 board; on this machine use the "
                   "portable path: an .onnx encoder and a .gguf LLM (pip install 'rkvideo[cpu]', then "
                   "`rkvideo selftest`)")


def check_soc(host: Host) -> list[Check]:
    compatible = host.read("/proc/device-tree/compatible")
    kernel = Check("kernel", OK, f"Linux {host.kernel} ({host.machine})")
    kv = _version(host.kernel) or (0, 0, 0)
    if compatible is not None and kv[:2] < (5, 10):
        kernel = Check("kernel", WARN, f"Linux {host.kernel}: older than 5.10",
                       "use a vendor image with kernel 5.10.209 or 6.1.84 (what Rockchip's RKLLM SDK recommends)")
    names = [c for c in (compatible or "").split("\x00") if c]
    chips = [c.split(",", 1)[1] for c in names if c.startswith("rockchip,rk")]
    if any(c.startswith("rk3588") for c in chips):
        soc = Check("soc", OK, f"{chips[0].upper()} ({', '.join(names)})")
    elif chips:
        soc = Check("soc", WARN, f"{chips[0].upper()}: a Rockchip SoC, but rkvideo targets RK3588",
                    "RK3576 and others have other NPU core counts and model builds; expect to adjust "
                    "vision.workers and convert the models for your SoC")
    else:
        where = "no /proc/device-tree/compatible" if compatible is None else f"device tree says {', '.join(names)}"
        soc = Check("soc", FAIL, f"no NPU: this {host.machine} machine is not an RK3588 board ({where})",
                    NOT_A_BOARD_FIX)
    return [soc, kernel]


def check_driver(host: Host, rockchip: bool) -> Check:
    sources = []
    denied = False
    # /proc/rknpu/version exists only when the kernel has CONFIG_ROCKCHIP_RKNPU_PROC_FS; debugfs needs root.
    for path in ("/sys/module/rknpu/version", "/proc/rknpu/version", "/sys/kernel/debug/rknpu/version"):
        try:
            text = host.read(path)
        except PermissionError:
            denied = True
            continue
        if text is not None and _version(text):
            sources.append((_version(text), path))
    if not sources:
        log = host.dmesg()
        if log is None:
            denied = True
        else:
            for line in log.splitlines():
                if "rknpu" in line.lower() and _version(line):
                    sources.append((_version(line), "dmesg"))
                    break
    if sources:
        version, where = sources[0]
        if version >= MIN_DRIVER:
            return Check("npu driver", OK, f"rknpu {_dotted(version)} (from {where})")
        return Check("npu driver", FAIL, f"rknpu {_dotted(version)} (from {where}) is older than 0.9.8",
                     "install a board image whose kernel has rknpu 0.9.8 or newer (the source is in "
                     "airockchip/rknn-llm rknpu-driver/); RKLLM warns and large models fail on older drivers")
    looked = [_exists(host.path(p)) for p in ("/sys/module/rknpu", "/sys/kernel/debug/rknpu")]
    denied = denied or None in looked
    present = any(looked) or bool(host.glob("/sys/class/devfreq/*npu*"))
    if (present or (denied and rockchip)) and not host.is_root:
        return Check("npu driver", WARN, "cannot read the NPU driver version without root",
                     "run `sudo rkvideo doctor`, or `sudo cat /sys/kernel/debug/rknpu/version` (0.9.8 or newer "
                     "is needed)")
    return Check("npu driver", FAIL, "no NPU driver (no /sys/module/rknpu, /sys/kernel/debug/rknpu or rknpu "
                 "line in dmesg)",
                 "on an RK3588 board, use a vendor kernel with the rknpu driver 0.9.8 or newer; "
                 "elsewhere there is no NPU to drive")


def check_librknnrt(host: Host) -> Check:
    wanted = host.path("/usr/lib/librknnrt.so")
    fix = ("copy rknpu2/runtime/Linux/librknn_api/aarch64/librknnrt.so from airockchip/rknn-toolkit2 (the "
           "release matching rknn-toolkit-lite2, 2.3.2 or newer) to /usr/lib/ — RKNNLite loads only that path")
    if _exists(wanted, file=True):
        return Check("librknnrt.so", OK, "/usr/lib/librknnrt.so")
    elsewhere = [d for d in host.lib_dirs if _exists(host.path(d + "/librknnrt.so"), file=True)]
    if elsewhere:
        return Check("librknnrt.so", FAIL, f"found in {elsewhere[0]} but RKNNLite loads only /usr/lib/librknnrt.so",
                     f"sudo cp {elsewhere[0]}/librknnrt.so /usr/lib/")
    return Check("librknnrt.so", FAIL, "/usr/lib/librknnrt.so not found", fix)


def _rkllm_library(host: Host, cfg) -> tuple[str, Path | None]:
    """(the configured llm.library or "", the librkllmrt.so found the way the runtime looks for it)."""
    from .llm import rkllm
    configured = str(cfg.resolve_path(cfg.llm.library)) if cfg is not None and cfg.llm.library else ""
    dirs = tuple(str(host.path(d)) for d in host.lib_dirs)
    found = next((p for p in rkllm.library_candidates(configured, host.env, dirs) if _exists(p, file=True)), None)
    return configured, found


def check_librkllmrt(host: Host, cfg) -> Check:
    from .llm import LLMError, rkllm
    configured, found = _rkllm_library(host, cfg)
    if found is None:
        where = configured or ", ".join(host.lib_dirs) + " or $LD_LIBRARY_PATH"
        return Check("librkllmrt.so", FAIL, f"librkllmrt.so not found ({where})",
                     "copy rkllm-runtime/Linux/librkllm_api/aarch64/librkllmrt.so from airockchip/rknn-llm "
                     "(release 1.2.1–1.2.3 or 1.3.0) to /usr/lib, or set llm.library")
    try:
        info = rkllm.inspect_library(found)
    except LLMError as exc:
        return Check("librkllmrt.so", FAIL, str(exc), f"make it readable by the user that runs rkvideo: "
                     f"sudo chmod 644 {found}")
    if info["machine"] and info["machine"] != host.machine and host.machine:
        return Check("librkllmrt.so", FAIL, f"{found} is built for {info['machine']}, this machine is {host.machine}",
                     "use the aarch64 librkllmrt.so on the RK3588 board")
    setting = cfg.llm.runtime if cfg is not None else "auto"
    try:
        layout, how = rkllm.choose_layout(setting, found)
    except LLMError as exc:
        return Check("librkllmrt.so", FAIL, str(exc), 'set llm.runtime = "1.2" or "1.3" to match the runtime '
                     "version it prints at load time, or install a supported runtime")
    return Check("librkllmrt.so", OK, f"{found}: struct layout {layout} ({how})")


def check_runtime_version(host: Host, cfg, profile) -> Check | None:
    """The runtime against the family's minimum (``Profile.min_runtime``), when the version can be told:
    a version string in the library, or layout 1.3 (1.3.0 is its only release). None when the library
    line above has already failed."""
    from .llm import LLMError, rkllm
    _, found = _rkllm_library(host, cfg)
    if found is None or profile is None:
        return None
    try:
        info = rkllm.inspect_library(found)
        layout, _ = rkllm.choose_layout(cfg.llm.runtime, found, info)
    except LLMError:
        return None
    release, need = rkllm.release_of(info, layout), profile.min_runtime
    if rkllm.runtime_too_old(release, need):
        return Check("rkllm runtime", FAIL, rkllm.requirement(profile, release),
                     f"install librkllmrt.so {need} or newer from airockchip/rknn-llm "
                     f"(rkllm-runtime/Linux/librkllm_api/aarch64/) and models converted for it")
    if release is not None:
        return Check("rkllm runtime", OK, f"runtime {release}; {profile.family} needs ≥ {need}")
    if need == rkllm.OLDEST_RELEASE:
        return Check("rkllm runtime", OK, f"runtime 1.2.x; every release rkvideo drives runs {profile.family}")
    return Check("rkllm runtime", WARN, f"cannot tell which 1.2.x runtime {found} is; {profile.name} "
                 f"({profile.family}) needs ≥ {need}",
                 f"check the line librkllmrt.so prints when it loads a model (rkllm-runtime version: …): "
                 f"{need} or newer is needed")


def check_python(host: Host) -> Check:
    """rknn-toolkit-lite2 has wheels for CPython 3.7–3.12 only; Debian 13 images ship 3.13."""
    from .vision import rknn
    version = ".".join(str(v) for v in host.python[:3])
    wheels = rknn.wheels_for(host.python)
    if wheels:
        return Check("python", OK, f"Python {version}: rknn-toolkit-lite2 {' and '.join(wheels)} have wheels for it")
    if host.has_module("rknnlite"):
        return Check("python", OK, f"Python {version}: no published rknn-toolkit-lite2 wheel, but rknnlite is "
                     f"importable")
    return Check("python", FAIL, f"Python {version}: rknn-toolkit-lite2 has no wheel for it "
                 f"({rknn.wheel_table()})", rknn.PYTHON_FIX)


def check_toolkit(host: Host) -> Check:
    from .vision import rknn
    if host.has_module("rknnlite"):
        try:
            version = importlib.metadata.version("rknn-toolkit-lite2")
        except importlib.metadata.PackageNotFoundError:
            version = "version unknown"
        return Check("rknn-toolkit-lite2", OK, f"importable ({version})")
    note = "" if host.machine == "aarch64" else f" (it has aarch64 wheels only; this machine is {host.machine})"
    fix = rknn.toolkit_hint(host.python)
    if fix == rknn.EXTRA_HINT:
        fix = "pip install 'rkvideo[rk]' on the board"
    return Check("rknn-toolkit-lite2", FAIL, "not installed" + note, fix)


def _model(cfg, key: str, suffix: str, kind: str) -> tuple[Check, Path | None]:
    name = f"model.{key}"
    value = getattr(cfg.model, key)
    if not value:
        return Check(name, WARN, f"{name} is not set", f"set {name} to the {kind} ({suffix}) in config.toml"), None
    path = cfg.resolve_path(value)
    found = _exists(path, file=True)
    if found is None:
        return Check(name, FAIL, f"{path}: cannot be looked at as this user (a folder above it is not readable)",
                     f"give the user that runs rkvideo read access to {path.parent} and the folders above "
                     f"it"), None
    if not found:
        return Check(name, FAIL, f"{path}: file not found", f"fix {name} in {cfg.source or 'config.toml'}"), None
    size = path.stat().st_size
    if path.suffix.lower() != suffix:
        return Check(name, WARN, f"{path} ({size / 1e9:.2f} GB) is not a {suffix} file: it will not run on the NPU",
                     f"for the board, set {name} to the {kind} ({suffix})"), path
    return Check(name, OK, f"{path} ({size / 1e9:.2f} GB)"), path


def _meminfo(host: Host) -> dict:
    values = {}
    for line in (host.read("/proc/meminfo") or "").splitlines():
        m = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if m:
            values[m.group(1)] = int(m.group(2)) * 1024
    return values


def check_memory(host: Host, cfg, vision: Path | None, llm: Path | None) -> list[Check]:
    from .vision import rknn
    checks = []
    workers = min(max(1, cfg.vision.workers), len(rknn.MASKS))
    vision_size = vision.stat().st_size if vision else 0
    need = (llm.stat().st_size if llm else 0) + workers * vision_size
    mem = _meminfo(host)
    if not need:
        pass
    elif "MemTotal" not in mem:
        checks.append(Check("memory", WARN, "cannot read /proc/meminfo"))
    else:
        what = f"models need ≈{need / 1e9:.1f} GB (LLM + {workers} encoder copies)"
        total, available = mem["MemTotal"], mem.get("MemAvailable", mem["MemTotal"])
        if need > total:
            checks.append(Check("memory", FAIL, f"{what}, the board has {total / 1e9:.1f} GB",
                                "use a smaller model or lower vision.workers"))
        elif need > available:
            checks.append(Check("memory", WARN, f"{what}, {available / 1e9:.1f} GB of {total / 1e9:.1f} GB is free",
                                "stop other programs, or lower vision.workers"))
        else:
            checks.append(Check("memory", OK, f"{what}; {available / 1e9:.1f} GB of {total / 1e9:.1f} GB free"))
    if vision is not None and vision.suffix.lower() == ".rknn":
        fit = rknn.fitting_instances(vision_size)
        if fit < workers:
            checks.append(Check("npu memory", WARN, f"{workers} copies of a {vision_size / 1e9:.2f} GB encoder do not "
                                f"fit the NPU's 4 GiB domain; {fit} will be loaded", f"set vision.workers = {fit}"))
        else:
            checks.append(Check("npu memory", OK, f"{workers} encoder copies fit the NPU's 4 GiB domain"))
    return checks


def check_encoder_shapes(host: Host, cfg, profile, vision: Path | None, ready: bool) -> Check:
    if vision is None or vision.suffix.lower() != ".rknn" or profile is None:
        return Check("encoder shapes", WARN, "not checked (needs model.vision set to an .rknn file)")
    if not ready:
        return Check("encoder shapes", WARN, "not checked (needs the NPU, its driver, /usr/lib/librknnrt.so and "
                     "rknn-toolkit-lite2)")
    from .vision import VisionError, rknn
    try:
        encoders = rknn.open_encoders(str(vision), profile, 1)
    except VisionError as exc:
        return Check("encoder shapes", FAIL, str(exc), "use the encoder that matches model.profile, or override "
                     "the profile in [model]")
    shapes = encoders[0].output_shapes
    for encoder in encoders:
        encoder.close()
    return Check("encoder shapes", OK, f"outputs {shapes} match profile {profile.name} "
                 f"(T={profile.tokens_per_image}, D={profile.embed_width}, {profile.encoder_outputs} output(s))")


# Governors that hold the clock at its maximum. `userspace` holds whatever was written to it: Rockchip's
# scripts/fix_freq_rk3588.sh writes the maximum, so it passes when the current frequency is the top one.
HOLDS_MAX = "performance"
PINNED = "userspace"
FIX_FREQ = "or run Rockchip's scripts/fix_freq_rk3588.sh from airockchip/rknn-llm as root"


def _number(path: Path) -> int | None:
    """The first number in a sysfs file (kHz for cpufreq, Hz for devfreq); None when unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _governor_state(governor: str, current: int | None, top: int | None) -> str | None:
    """None when the clock is held at its maximum; else what to show (e.g. "userspace at 1008000 of …")."""
    if governor == HOLDS_MAX or (governor == PINNED and current is not None and top is not None and current >= top):
        return None
    if governor == PINNED:
        where = "an unreadable frequency" if current is None or top is None else f"{current} of {top}"
        return f"userspace at {where}"
    return governor


def _cpu_governors(host: Host) -> Check:
    held, slow = set(), set()
    for policy in host.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"):
        try:
            governor = (policy / "scaling_governor").read_text().strip()
        except OSError:
            continue
        state = _governor_state(governor, _number(policy / "scaling_cur_freq"),
                                _number(policy / "cpuinfo_max_freq"))
        if state is None:
            held.add(governor if governor == HOLDS_MAX else f"{PINNED} at maximum")
        else:
            slow.add(state)
    if not held and not slow:
        return Check("cpu governor", WARN, "no cpufreq governors found")
    if slow:
        return Check("cpu governor", WARN, f"{', '.join(sorted(slow))}: the LLM's CPU side may run below full clock",
                     f"echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor ({FIX_FREQ})")
    return Check("cpu governor", OK, ", ".join(sorted(held)))


def _npu_governor(host: Host) -> Check:
    nodes = host.glob("/sys/class/devfreq/*npu*/governor")
    if not nodes:
        return Check("npu governor", WARN, "no NPU devfreq node (/sys/class/devfreq/*npu*)")
    folder = nodes[0].parent
    governor = nodes[0].read_text().strip()
    node = "/" + str(nodes[0].relative_to(host.root))
    try:
        available = [int(v) for v in (folder / "available_frequencies").read_text().split()]
    except (OSError, ValueError):
        available = []
    top = max(available) if available else _number(folder / "max_freq")
    state = _governor_state(governor, _number(folder / "cur_freq"), top)
    if state is None:
        held = governor if governor == HOLDS_MAX else f"{PINNED} at maximum ({top} Hz)"
        return Check("npu governor", OK, f"{held} ({node})")
    return Check("npu governor", WARN, f"{state}: the NPU may not run at full clock",
                 f"echo performance | sudo tee {node} ({FIX_FREQ})")


def check_governors(host: Host) -> list[Check]:
    return [_cpu_governors(host), _npu_governor(host)]


def run_checks(cfg=None, host: Host | None = None, config_error: str | None = None) -> list[Check]:
    host = host or Host()
    checks = check_soc(host)
    checks.append(check_driver(host, rockchip=checks[0].status != FAIL))
    checks.append(check_librknnrt(host))
    checks.append(check_librkllmrt(host, cfg))
    checks.append(check_python(host))
    checks.append(check_toolkit(host))
    if config_error is not None:
        checks.append(Check("config", FAIL, config_error, "fix the config file"))
        checks += check_governors(host)
        return checks
    profile = None
    try:
        profile = models.resolve(cfg.model)
        where = cfg.source or "built-in defaults (no config file found)"
        checks.append(Check("config", OK, f"{where}; profile {profile.name}"))
    except models.UnknownProfile as exc:
        checks.append(Check("config", FAIL, str(exc), "set model.profile to a name from `rkvideo models`"))
    runtime = check_runtime_version(host, cfg, profile)
    if runtime is not None:
        checks.append(runtime)
    vision_check, vision = _model(cfg, "vision", ".rknn", "vision encoder")
    llm_check, llm = _model(cfg, "llm", ".rkllm", "LLM")
    checks += [vision_check, llm_check]
    checks += check_memory(host, cfg, vision, llm)
    board = {c.name: c.status for c in checks}
    ready = all(board.get(n) != FAIL for n in ("soc", "npu driver", "librknnrt.so", "rknn-toolkit-lite2"))
    checks.append(check_encoder_shapes(host, cfg, profile, vision, ready))
    checks += check_governors(host)
    return checks


# ------------------------------------------------------------------------------------------------
# The report

def summary(checks: list[Check]) -> str:
    fails = [c for c in checks if c.status == FAIL]
    warns = [c for c in checks if c.status == WARN]
    if not fails:
        return f"ready: nothing failed ({len(warns)} warning(s))"
    if any(c.name == "soc" and c.status == FAIL for c in checks):
        return (f"{len(fails)} FAIL, {len(warns)} WARN: no NPU here, so the board path cannot run on this "
                f"machine (see the soc line)")
    return f"{len(fails)} FAIL, {len(warns)} WARN: fix the FAIL lines, then run `rkvideo doctor` again"


@dataclass
class Report:
    """Every check, in order; ``ok`` when none FAILs (WARN lines are advice)."""
    checks: list

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    @property
    def summary(self) -> str:
        return summary(self.checks)

    def as_dict(self) -> dict:
        """The JSON `rkvideo doctor --json` prints."""
        return {"ok": self.ok, "summary": self.summary, "checks": [asdict(c) for c in self.checks]}


def examine(config_path: str | os.PathLike | None = None, host: Host | None = None) -> Report:
    """Check this machine (or ``host``) with the config found from ``config_path``; a config that cannot
    be read is one FAIL line, not an error: the board checks still run."""
    cfg, error = None, None
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        error = str(exc)
    return Report(run_checks(cfg, host, error))
