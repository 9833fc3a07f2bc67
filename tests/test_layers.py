"""The package's shape, checked on every run: layers one way, no import cycle, ruff clean.

The layers contract lives in pyproject.toml ([tool.importlinter]); import-linter
fails when a module imports from a layer above its own. A cycle between
modules of one layer is not a layering error, so it is found here from the
same import graph (grimp, which import-linter is built on).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def test_layers_contract_holds():
    result = subprocess.run([tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_import_cycle():
    graph = grimp.build_graph("rkvideo", cache_dir=None)
    cycles = []
    state: dict = {}

    def visit(module: str, trail: list) -> None:
        state[module] = "open"
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(imported) == "open":
                cycles.append(trail[trail.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, trail + [imported])
        state[module] = "done"

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_ruff_is_clean():
    result = subprocess.run([tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


FORBIDDEN = (r"\bimport click\b", r"\bimport argparse\b", r"\bsys\.exit\(", r"\bEXIT_[A-Z]+", r"(?<![\w.])print\(")


def test_no_exit_code_or_terminal_output_below_the_cli():
    """Exit codes belong to errors.py and cli/; printing and argument parsing to cli/."""
    offenders = []
    for path in sorted((ROOT / "src" / "rkvideo").rglob("*.py")):
        rel = path.relative_to(ROOT / "src" / "rkvideo")
        if rel.parts[0] == "cli" or rel.name in ("errors.py", "__main__.py"):
            continue
        text = path.read_text()
        for needle in FORBIDDEN:
            if re.search(needle, text):
                offenders.append(f"{rel}: {needle}")
    assert offenders == []
