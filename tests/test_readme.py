"""The README's Quick start is what CI runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> list:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_quick_start_has_install_and_test_commands():
    install, test = quick_start()
    assert "pip install" in install and "pytest" in test


def test_ci_runs_exactly_the_quick_start():
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == quick_start()


def test_every_cli_command_is_in_the_readme():
    from rkvideo import cli
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    text = (ROOT / "README.md").read_text()
    missing = [name for name in commands if f"rkvideo {name}" not in text]
    assert not missing, f"commands not documented in README: {missing}"
