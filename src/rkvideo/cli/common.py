"""What every command shares: the options defined once, where the config and the database are
found, how a message reaches stderr, and the ONE place where an error becomes an exit status.

Why here and nowhere else: the layers below raise ``errors`` kinds and return records; only the
command line knows that a ``UsageError`` means exit status 2 (``errors.exit_code``) and that the
message goes to stderr as one ``rkvideo: error:`` line. ``Group.invoke`` applies that to every
command, so ``main()`` and click's ``CliRunner`` see the same status.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import click

from .. import config as config_mod, errors

# -h as well as --help, as argparse allowed.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

CONFIG_HELP = ("config file (default: $RKVIDEO_CONFIG, ./config.toml, $XDG_CONFIG_HOME/rkvideo/config.toml "
               "i.e. ~/.config/rkvideo/config.toml, /etc/rkvideo/config.toml)")
DB_HELP = ("database file or postgresql:// URL (default: watch.db from the config, "
           "$XDG_DATA_HOME/rkvideo/rkvideo.db i.e. ~/.local/share/rkvideo/rkvideo.db)")


# ------------------------------------------------------------------ options

def config_option(command):
    return click.option("--config", metavar="PATH", help=CONFIG_HELP)(command)


def db_option(help: str = DB_HELP):
    return click.option("--db", metavar="PATH|URL", help=help)


def json_option(what: str):
    """``--json``: ``what`` is the shape printed, e.g. "a JSON array"."""
    return click.option("--json", "as_json", is_flag=True, help=f"print {what}")


# ------------------------------------------------------------------ lookups

def load_config(path: str | None) -> config_mod.Config:
    """The config for ``--config`` (or the lookup order); a bad file raises ``UsageError``."""
    return config_mod.load(path)


def database(db: str | None, config_path: str | None) -> Path | str:
    """``--db``, else ``watch.db`` from the config, else the per-user data folder (a URL as it is)."""
    if db:
        return target(db)
    return load_config(config_path).database_path()


def target(db: str) -> Path | str:
    """A ``--db`` value or command argument: a postgresql:// URL as it is, else a file path."""
    return db if config_mod.is_url(db) else Path(db).expanduser()


def roots(config_path: str | None) -> dict:
    """``[watch] roots`` (name -> folder): a shared database names recordings by them."""
    return load_config(config_path).roots()


# ------------------------------------------------------------------ messages

def warn(message: str) -> None:
    print(f"rkvideo: warning: {message}", file=sys.stderr)


def error(message: str) -> None:
    print(f"rkvideo: error: {message}", file=sys.stderr)


class StderrHandler(logging.Handler):
    """A stage's log record as one ``rkvideo: warning: …`` line on the stderr of the moment (tests
    swap sys.stderr, so it is looked up at each record, not kept)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"rkvideo: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never end the command
            self.handleError(record)


@contextlib.contextmanager
def stage_messages():
    """Show the stages' warnings (a runtime layout picked, encoder copies that do not fit the NPU) on
    stderr while a command runs. Stages log instead of printing; ``watch`` sets up logging of its own."""
    handler = StderrHandler(logging.WARNING)
    logger = logging.getLogger("rkvideo")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


# ------------------------------------------------------------------ exit status

class Group(click.Group):
    """The ``rkvideo`` group: commands listed in the order they were added, and every error a
    command raises turned into its exit status here.

    A command returns ``None`` (status 0) or an int status for an outcome that is not an error
    (``search`` found nothing, ``doctor`` has a FAIL line).
    """

    def list_commands(self, ctx) -> list:
        return list(self.commands)

    def invoke(self, ctx):
        try:
            status = super().invoke(ctx)
        except (KeyboardInterrupt, errors.RkvideoError) as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, errors.Interrupted))
            error("interrupted" if interrupted else str(exc))
            ctx.exit(errors.exit_code(exc))
        except BrokenPipeError:               # `rkvideo list | head`: the reader has what it wanted
            ctx.exit(errors.EXIT_OK)
        if status:
            ctx.exit(status)
        return status


def run(group: click.Group, argv: list | None) -> int:
    """Run ``group`` on ``argv`` and return the exit status instead of leaving the process."""
    try:
        return group.main(args=argv, prog_name="rkvideo", standalone_mode=False) or errors.EXIT_OK
    except click.ClickException as exc:       # click's own usage errors: status 2
        exc.show()
        return exc.exit_code
    except click.Abort:                       # Ctrl-C while click itself was parsing
        error("interrupted")
        return errors.EXIT_INTERRUPTED
