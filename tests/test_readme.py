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


def commands() -> dict:
    from rkvideo import cli
    return dict(cli.rkvideo.commands)


def test_every_cli_command_is_in_the_readme():
    text = (ROOT / "README.md").read_text()
    missing = [name for name in commands() if f"rkvideo {name}" not in text]
    assert not missing, f"commands not documented in README: {missing}"


def test_every_cli_command_has_help_with_an_example():
    from click.testing import CliRunner

    from rkvideo import cli
    assert set(commands()) == {"describe", "models", "selftest", "doctor", "watch", "list", "show", "search",
                               "retry", "outbox", "serve", "forget", "workers", "migrate-db"}
    for name in commands():
        result = CliRunner().invoke(cli.rkvideo, [name, "--help"], terminal_width=200)
        assert result.exit_code == 0, name
        help_text = result.output
        examples = help_text.split("Examples:", 1)[-1]
        assert "Examples:" in help_text and f"rkvideo {name}" in examples, f"{name}: no example in --help"
        # \b kept the example lines as written: each is one line of the help, not re-wrapped.
        shown = {line.strip() for line in examples.splitlines()}
        written = [line.strip() for line in commands()[name].epilog.splitlines() if line.startswith("  rkvideo ")]
        assert written and all(line in shown for line in written), f"{name}: examples re-wrapped"


def test_readme_and_help_agree_on_the_options_they_name():
    """Each `--option` a README line uses with `rkvideo NAME` exists in that command's --help."""
    from click.testing import CliRunner

    from rkvideo import cli
    text = (ROOT / "README.md").read_text()
    for name in commands():
        help_text = CliRunner().invoke(cli.rkvideo, [name, "--help"], terminal_width=200).output
        used = set()
        for line in text.splitlines():
            if f"rkvideo {name} " in line:
                tail = line.split(f"rkvideo {name} ", 1)[1].split("#", 1)[0]
                used |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", tail))
        missing = sorted(opt for opt in used if opt not in help_text)
        assert not missing, f"README uses {missing} with `rkvideo {name}`, --help does not list them"
