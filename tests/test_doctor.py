"""`rkvideo doctor`: on this machine (no NPU) and against fake board trees."""
from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import pytest

from doubles.fake_rknnlite import FakeRKNNLite, write_rknn
from doubles.fixtures import stub_build  # noqa: F401 (fixture)
from rkvideo import cli, config, doctor
from rkvideo.llm import LLMError, rkllm
from rkvideo.vision import rknn

ON_A_BOARD = "rk3588" in (Path("/proc/device-tree/compatible").read_bytes().decode(errors="replace")
                          if Path("/proc/device-tree/compatible").is_file() else "")


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RKVIDEO_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.mark.skipif(ON_A_BOARD, reason="this test describes a machine without an NPU")
def test_this_machine_reports_no_npu_and_fails(no_config, capsys):
    code = cli.main(["doctor"])
    out = capsys.readouterr().out
    assert code == 1
    first = next(line for line in out.splitlines() if line.startswith(("OK", "WARN", "FAIL")))
    assert first.startswith("FAIL  soc")
    assert f"no NPU: this {platform.machine()} machine is not an RK3588 board" in first
    assert "→ the NPU path (.rknn + .rkllm) runs only on an RK3588 board" in out
    assert "no NPU here, so the board path cannot run on this machine" in out.splitlines()[-1]
    for name in ("npu driver", "librknnrt.so", "librkllmrt.so", "rknn-toolkit-lite2", "cpu governor", "npu governor"):
        assert any(line.split("  ", 1)[-1].lstrip().startswith(name) for line in out.splitlines()), name


@pytest.mark.skipif(ON_A_BOARD, reason="this test describes a machine without an NPU")
def test_json_output(no_config, capsys):
    code = cli.main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["soc"] == "FAIL" and statuses["config"] == "OK"
    assert all(set(c) == {"name", "status", "message", "fix"} for c in report["checks"])
    assert all(c["fix"] for c in report["checks"] if c["status"] == "FAIL")


def test_bad_config_is_a_fail_line(no_config, capsys, tmp_path):
    (tmp_path / "bad.toml").write_text("[model]\nprofile = 3\n")
    assert cli.main(["doctor", "--config", str(tmp_path / "bad.toml")]) == 1
    assert "FAIL  config" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# A fake RK3588 root

SIZE = 112     # in 28-pixel patches: 16 tokens, which the Qwen2-VL arithmetic (14-pixel patches, 2×2) maps back to 112


@pytest.fixture
def board(tmp_path, stub_build, monkeypatch):
    """A healthy board tree + config; returns (host, config path). Tests break one thing each."""
    pytest.importorskip("onnxruntime", reason="needs the [cpu] extra: pip install -e '.[cpu]'")
    pytest.importorskip("onnx", reason="needs the [cpu] extra: pip install -e '.[cpu]'")
    from rkvideo import models, selftest
    root = tmp_path / "root"

    def put(path, text):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    put("/proc/device-tree/compatible", "radxa,rock-5b\0rockchip,rk3588\0")
    put("/sys/module/rknpu/version", "0.9.8\n")
    put("/usr/lib/librknnrt.so", "stand-in")
    put("/proc/meminfo", "MemTotal:       16000000 kB\nMemFree:        9000000 kB\nMemAvailable:   12000000 kB\n")
    for cpu in range(8):
        put(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor", "performance\n")
    put("/sys/class/devfreq/fdab0000.npu/governor", "performance\n")
    shutil.copy(stub_build("1.3", "1.3.0"), root / "usr/lib/librkllmrt.so")
    models_dir = tmp_path / "models"
    selftest.build_encoder(models_dir / "vision.onnx", size=SIZE, patch=28, width=32)
    write_rknn(models_dir / "vision.rknn", mean=models.CLIP_MEAN, std=models.CLIP_STD)
    (models_dir / "llm.rkllm").write_text("embed_width=32\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""[model]
profile = "qwen2-vl-2b"
vision = "models/vision.rknn"
llm = "models/llm.rkllm"
input_size = {SIZE}
tokens_per_image = 16
embed_width = 32
""")
    FakeRKNNLite.reset()
    monkeypatch.setattr(rknn, "_load_class", lambda: FakeRKNNLite)
    host = doctor.Host(root=root, env={}, machine=platform.machine(), kernel="6.1.84-rk3588", is_root=False,
                       dmesg=lambda: None, has_module=lambda name: name == "rknnlite", python=(3, 12, 3))
    yield host, cfg
    FakeRKNNLite.reset()


def statuses(host, cfg_path):
    checks = doctor.run_checks(config.read(cfg_path), host)
    return {c.name: c for c in checks}


def test_a_healthy_board_passes(board, capsys, monkeypatch):
    host, cfg = board
    checks = statuses(host, cfg)
    assert {n: c.status for n, c in checks.items() if c.status != "OK"} == {}
    assert "RK3588" in checks["soc"].message and "rknpu 0.9.8" in checks["npu driver"].message
    assert "struct layout 1.3 (version string 1.3.0 in the library)" in checks["librkllmrt.so"].message
    assert "outputs [[1, 16, 32]] match profile qwen2-vl-2b" in checks["encoder shapes"].message
    assert all(i.released for i in FakeRKNNLite.instances)

    assert doctor.examine(cfg, host).ok
    monkeypatch.setattr(doctor, "Host", lambda: host)      # the command checks the fake board
    assert cli.main(["doctor", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ready: nothing failed")


def test_the_runner_gets_the_json_report_and_its_status(board, monkeypatch):
    from click.testing import CliRunner
    host, cfg = board
    monkeypatch.setattr(doctor, "Host", lambda: host)
    result = CliRunner().invoke(cli.rkvideo, ["doctor", "--config", str(cfg), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True
    (host.root / "sys/module/rknpu/version").write_text("0.9.6\n")
    result = CliRunner().invoke(cli.rkvideo, ["doctor", "--config", str(cfg), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False


def test_old_driver_fails(board):
    host, cfg = board
    (host.root / "sys/module/rknpu/version").write_text("0.9.6\n")
    check = statuses(host, cfg)["npu driver"]
    assert check.status == "FAIL" and "0.9.6" in check.message and "0.9.8" in check.fix


def test_driver_from_dmesg_and_root_hint(board):
    host, cfg = board
    shutil.rmtree(host.root / "sys/module/rknpu")
    host.dmesg = lambda: "[    2.5] [drm] Initialized rknpu 0.9.8 20240828 for fdab0000.npu on minor 1\n"
    assert statuses(host, cfg)["npu driver"].message == "rknpu 0.9.8 (from dmesg)"

    class Guarded(doctor.Host):
        def read(self, absolute):
            if "debug" in absolute:
                raise PermissionError(absolute)
            return super().read(absolute)

    guarded = Guarded(**{**host.__dict__, "dmesg": lambda: None})
    (host.root / "sys/kernel/debug/rknpu").mkdir(parents=True)
    check = statuses(guarded, cfg)["npu driver"]
    assert check.status == "WARN" and "without root" in check.message and "sudo" in check.fix


def test_librknnrt_must_be_in_usr_lib(board):
    host, cfg = board
    (host.root / "usr/local/lib").mkdir(parents=True)
    (host.root / "usr/lib/librknnrt.so").rename(host.root / "usr/local/lib/librknnrt.so")
    check = statuses(host, cfg)["librknnrt.so"]
    assert check.status == "FAIL" and "only /usr/lib/librknnrt.so" in check.message
    assert check.fix == "sudo cp /usr/local/lib/librknnrt.so /usr/lib/"
    assert statuses(host, cfg)["encoder shapes"].status == "WARN"   # not tried without the runtime


def test_librkllmrt_layout_unknown_then_configured(board, stub_build):
    host, cfg = board
    shutil.copy(stub_build("1.3", None), host.root / "usr/lib/librkllmrt.so")
    check = statuses(host, cfg)["librkllmrt.so"]
    assert check.status == "FAIL" and "cannot tell" in check.message and "llm.runtime" in check.fix
    cfg.write_text(cfg.read_text() + '\n[llm]\nruntime = "1.3"\n')
    assert statuses(host, cfg)["librkllmrt.so"].message.endswith("struct layout 1.3 (from llm.runtime)")


def test_librkllmrt_from_ld_library_path_and_missing(board, tmp_path):
    host, cfg = board
    elsewhere = tmp_path / "opt"
    elsewhere.mkdir()
    (host.root / "usr/lib/librkllmrt.so").rename(elsewhere / "librkllmrt.so")
    assert statuses(host, cfg)["librkllmrt.so"].status == "FAIL"
    host.env = {"LD_LIBRARY_PATH": str(elsewhere)}
    assert statuses(host, cfg)["librkllmrt.so"].message.startswith(f"{elsewhere}/librkllmrt.so: struct layout 1.3")


def test_models_memory_and_governors(board, monkeypatch):
    host, cfg = board
    (host.root / "proc/meminfo").write_text("MemTotal: 8 kB\nMemAvailable: 4 kB\n")
    with open(cfg.parent / "models/llm.rkllm", "a") as llm:   # 20 kB: more than the 8 kB board
        llm.write("#" * 20000 + "\n")
    (host.root / "sys/devices/system/cpu/cpu3/cpufreq/scaling_governor").write_text("schedutil\n")
    (host.root / "sys/class/devfreq/fdab0000.npu/governor").write_text("rknpu_ondemand\n")
    size = (cfg.parent / "models/vision.rknn").stat().st_size
    monkeypatch.setattr(rknn, "DOMAIN_BYTES", int(size * rknn.OVERHEAD * 1.5))   # room for one copy
    checks = statuses(host, cfg)
    assert checks["memory"].status == "FAIL"
    assert checks["npu memory"].status == "WARN" and checks["npu memory"].fix == "set vision.workers = 1"
    assert checks["cpu governor"].status == "WARN" and "performance" in checks["cpu governor"].fix
    assert checks["npu governor"].fix.startswith("echo performance | sudo tee /sys/class/devfreq/fdab0000.npu/governor")
    assert "fix_freq_rk3588.sh" in checks["npu governor"].fix


def test_encoder_shape_mismatch_and_missing_model(board):
    host, cfg = board
    cfg.write_text(cfg.read_text().replace("tokens_per_image = 16", "tokens_per_image = 196"))
    check = statuses(host, cfg)["encoder shapes"]
    assert check.status == "FAIL" and "16 tokens per image, profile qwen2-vl-2b says 196" in check.message
    (cfg.parent / "models/llm.rkllm").unlink()
    assert statuses(host, cfg)["model.llm"].status == "FAIL"


def test_other_rockchip_soc_warns(board):
    host, cfg = board
    (host.root / "proc/device-tree/compatible").write_text("rockchip,rk3576\0")
    assert statuses(host, cfg)["soc"].status == "WARN"


def deny(monkeypatch, folder: Path) -> None:
    """Make ``folder`` act as a 0700 folder of another user. Tests run as root, which may enter any
    folder, so the refusal is simulated where the OS gives it: stat() and open() below ``folder`` raise
    PermissionError, and pathlib's own exists()/is_file() then raise it as they do on Python 3.11."""
    inside = str(folder) + "/"

    def guard(original):
        def guarded(self, *args, **kwargs):
            if str(self).startswith(inside):
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, *args, **kwargs)
        return guarded

    for name in ("stat", "open"):
        monkeypatch.setattr(Path, name, guard(getattr(Path, name)))


def test_unreadable_debugfs_and_restricted_dmesg_say_root_is_needed(board, monkeypatch, capsys):
    """A non-root user on a board whose driver version lives only in /sys/kernel/debug (0700)."""
    host, cfg = board
    shutil.rmtree(host.root / "sys/module/rknpu")
    shutil.rmtree(host.root / "sys/class/devfreq")          # nothing else shows an NPU is there
    (host.root / "sys/kernel/debug/rknpu").mkdir(parents=True)
    (host.root / "sys/kernel/debug/rknpu/version").write_text("0.9.8\n")
    deny(monkeypatch, host.root / "sys/kernel/debug")
    assert not host.is_root and host.dmesg() is None

    monkeypatch.setattr(doctor, "Host", lambda: host)      # the command checks the fake board
    cli.main(["doctor", "--config", str(cfg)])
    lines = capsys.readouterr().out.splitlines()
    driver = next(i for i, line in enumerate(lines) if line.startswith("WARN  npu driver"))
    assert "cannot read the NPU driver version without root" in lines[driver]
    assert "sudo rkvideo doctor" in lines[driver + 1]


def test_model_and_library_folders_this_user_cannot_read(board, monkeypatch, tmp_path):
    host, cfg = board
    locked = tmp_path / "locked"
    locked.mkdir()
    (host.root / "usr/lib/librkllmrt.so").rename(locked / "librkllmrt.so")
    host.env = {"LD_LIBRARY_PATH": str(locked)}
    deny(monkeypatch, cfg.parent / "models")
    deny(monkeypatch, locked)
    checks = statuses(host, cfg)
    for name in ("model.vision", "model.llm"):
        assert checks[name].status == "FAIL" and "a folder above it is not readable" in checks[name].message
        assert f"read access to {cfg.parent / 'models'}" in checks[name].fix
    assert checks["librkllmrt.so"].status == "FAIL" and "librkllmrt.so not found" in checks["librkllmrt.so"].message
    # `rkvideo describe` looks the same way: one-line errors, no tracebacks.
    with pytest.raises(LLMError, match="librkllmrt.so not found"):
        rkllm.find_library(None, host.env, ())
    with pytest.raises(LLMError, match="librkllmrt.so: cannot read the RKLLM runtime"):
        rkllm.inspect_library(locked / "librkllmrt.so")


# ------------------------------------------------------------------------------------------------
# Issue 10: clocks pinned by fix_freq_rk3588.sh, /proc/rknpu/version, Python 3.13, minimum runtime

def pin(host, cpu_khz=(2256000, 2256000), npu_hz=(1000000000, 1000000000)):
    """What Rockchip's fix_freq_rk3588.sh leaves: the userspace governor, at (current, maximum)."""
    for cpu in range(8):
        policy = host.root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        (policy / "scaling_governor").write_text("userspace\n")
        (policy / "scaling_cur_freq").write_text(f"{cpu_khz[0]}\n")
        (policy / "cpuinfo_max_freq").write_text(f"{cpu_khz[1]}\n")
    npu = host.root / "sys/class/devfreq/fdab0000.npu"
    (npu / "governor").write_text("userspace\n")
    (npu / "cur_freq").write_text(f"{npu_hz[0]}\n")
    (npu / "available_frequencies").write_text(f"300000000 600000000 {npu_hz[1]}\n")


def test_userspace_governor_at_maximum_is_accepted(board):
    host, cfg = board
    pin(host)
    checks = statuses(host, cfg)
    assert checks["cpu governor"].status == "OK" and checks["cpu governor"].message == "userspace at maximum"
    assert checks["npu governor"].status == "OK"
    assert checks["npu governor"].message.startswith("userspace at maximum (1000000000 Hz)")


def test_userspace_governor_below_maximum_and_scaling_governors_warn(board):
    host, cfg = board
    pin(host, cpu_khz=(1008000, 2256000), npu_hz=(300000000, 1000000000))
    checks = statuses(host, cfg)
    cpu, npu = checks["cpu governor"], checks["npu governor"]
    assert cpu.status == "WARN" and "userspace at 1008000 of 2256000" in cpu.message
    assert npu.status == "WARN" and "userspace at 300000000 of 1000000000" in npu.message
    assert "fix_freq_rk3588.sh" in checks["cpu governor"].fix
    (host.root / "sys/devices/system/cpu/cpu5/cpufreq/scaling_cur_freq").unlink()
    assert "userspace at an unreadable frequency" in statuses(host, cfg)["cpu governor"].message
    for cpu in range(8):
        (host.root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor").write_text("ondemand\n")
    (host.root / "sys/class/devfreq/fdab0000.npu/governor").write_text("simple_ondemand\n")
    checks = statuses(host, cfg)
    assert checks["cpu governor"].message.startswith("ondemand:") and checks["cpu governor"].status == "WARN"
    assert checks["npu governor"].message.startswith("simple_ondemand:")


def test_driver_version_from_proc_rknpu(board):
    host, cfg = board
    shutil.rmtree(host.root / "sys/module/rknpu")
    (host.root / "proc/rknpu").mkdir(parents=True)
    (host.root / "proc/rknpu/version").write_text("RKNPU driver: v0.9.8\n")
    check = statuses(host, cfg)["npu driver"]
    assert check.status == "OK" and check.message == "rknpu 0.9.8 (from /proc/rknpu/version)"


def test_python_313_has_no_toolkit_wheel(board):
    host, cfg = board
    assert statuses(host, cfg)["python"].message == ("Python 3.12.3: rknn-toolkit-lite2 2.3.2 and 2.5.0 have "
                                                     "wheels for it")
    host.python = (3, 13, 5)
    host.has_module = lambda name: False
    checks = statuses(host, cfg)
    assert checks["python"].status == "FAIL"
    assert checks["python"].message == ("Python 3.13.5: rknn-toolkit-lite2 has no wheel for it (2.3.2: cp37–cp312; "
                                        "2.5.0: cp310–cp312)")
    for name in ("python", "rknn-toolkit-lite2"):
        assert "uv venv --seed --python 3.12" in checks[name].fix, name
    host.python = (3, 11, 2)
    checks = statuses(host, cfg)
    assert checks["python"].status == "OK"
    assert checks["rknn-toolkit-lite2"].fix == "pip install 'rkvideo[rk]' on the board"


def test_the_rk_extra_skips_the_toolkit_where_no_wheel_exists():
    """pyproject.toml: on 3.13 `pip install 'rkvideo[rk]'` installs without rknn-toolkit-lite2 instead of failing
    to resolve it; doctor and the .rknn loader then name the fix (a 3.12 environment)."""
    from packaging.requirements import Requirement

    from rkvideo.config import tomllib
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    rk = [Requirement(r) for r in tomllib.loads(text)["project"]["optional-dependencies"]["rk"]]
    toolkit = next(r for r in rk if r.name == "rknn-toolkit-lite2")
    board = {"platform_machine": "aarch64", "sys_platform": "linux"}
    for version, wanted in (("3.10", True), ("3.12", True), ("3.13", False), ("3.14", False)):
        assert toolkit.marker.evaluate({**board, "python_version": version}) is wanted, version
    assert not toolkit.marker.evaluate({"platform_machine": "x86_64", "sys_platform": "linux",
                                        "python_version": "3.12"})


@pytest.mark.parametrize("version,runtime,profile,status,text", [
    ("1.2.2", "auto", "qwen3-vl-2b", "FAIL", "profile qwen3-vl-2b (qwen3-vl) needs RKLLM runtime ≥ 1.2.3; this "
                                             "library: 1.2.2"),
    ("1.2.2", "auto", "internvl3-1b", "OK", "runtime 1.2.2; internvl3 needs ≥ 1.2.2"),
    ("1.3.0", "auto", "smolvlm2-500m", "OK", "runtime 1.3.0; smolvlm2 needs ≥ 1.2.2"),
    (None, "1.3", "internvl3.5-1b", "OK", "runtime 1.3.0; internvl3.5 needs ≥ 1.2.3"),
    (None, "1.2", "qwen3-vl-4b", "WARN", "cannot tell which 1.2.x runtime"),
    (None, "1.2", "qwen2-vl-2b", "OK", "every release rkvideo drives runs qwen2-vl"),
])
def test_minimum_runtime_per_family(board, stub_build, version, runtime, profile, status, text):
    host, cfg = board
    layout = "1.3" if version == "1.3.0" or runtime == "1.3" else "1.2"
    shutil.copy(stub_build(layout, version), host.root / "usr/lib/librkllmrt.so")
    cfg.write_text(cfg.read_text().replace('profile = "qwen2-vl-2b"', f'profile = "{profile}"')
                   + f'\n[llm]\nruntime = "{runtime}"\n')
    check = statuses(host, cfg)["rkllm runtime"]
    assert check.status == status and text in check.message
    if status != "OK":
        assert "1.2.3" in check.fix
