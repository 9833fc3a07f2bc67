"""What every command shares: the options defined once, where the config and the database are
found, how a message reaches stderr, and the ONE place where an error becomes an exit status.

Why here and nowhere else: the layers below raise ``errors`` kinds and return records; only the
command line knows that a ``UsageError`` means exit status 2 (``errors.exit_code``) and that the
message goes to stderr as one ``rkvideo: error:`` line. ``Group.invoke`` applies that to every
command, so ``main()`` and click's ``CliRunner`` see the same status.

The edge also catches what no stage raises on purpose but a user meets: standard output that is
closed or on a full disk (``OutputError``, status 1; a reader that went away, as in ``rkvideo list |
head``, is status 0 without a word), and a number too large for SQLite (status 2). Each is one line,
never a traceback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from .. import config as config_mod, errors, printable

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

# The largest integer SQLite stores: a job id or a --limit beyond it cannot mean anything else.
SQLITE_MAX_INT = 2**63 - 1


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
    _to_stderr(f"rkvideo: warning: {printable.line(message)}")


def error(message: str) -> None:
    _to_stderr(f"rkvideo: error: {printable.line(message)}")


def _to_stderr(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):       # stderr closed or full: there is nowhere left to say it
        pass


def print_json(data, **options) -> None:
    """``data`` as JSON on stdout: valid UTF-8, no raw control characters (``printable.json_text``)."""
    print(printable.json_text(data, **options), flush=True)


class StderrHandler(logging.Handler):
    """A stage's log record as one ``rkvideo: warning: …`` line on the stderr of the moment (tests
    swap sys.stderr, so it is looked up at each record, not kept)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"rkvideo: {record.levelname.lower()}: {printable.line(record.getMessage())}", file=sys.stderr)
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


# ------------------------------------------------------------------ standard output

class OutputError(errors.RuntimeFailure):
    """Standard output cannot take what the command prints: it is closed, or its disk is full."""


class ReaderGone(Exception):
    """The reader of standard output went away (``rkvideo list | head``): it has what it wanted.
    Not an ``OSError``, so that nothing between the write and ``run`` takes it for another failure."""


class GuardedOutput:
    """``sys.stdout`` while a command runs: a write that fails raises ``OutputError`` with the reason,
    or ``ReaderGone`` for a broken pipe. It has no ``buffer``, so that click writes through it rather
    than around it; the stream's other attributes are passed on."""

    PASSED_ON = ("encoding", "errors", "fileno", "name", "closed", "mode", "newlines", "line_buffering")

    def __init__(self, stream):
        self.stream = stream
        self.failed: Exception | None = None     # kept: a caller may swallow it (click probes the stream)

    def write(self, text: str) -> int:
        return self._guard(lambda stream: stream.write(text))

    def flush(self) -> None:
        if self.stream is not None:
            self._guard(lambda stream: stream.flush())

    def isatty(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def _guard(self, call):
        if self.failed is not None:
            raise self.failed
        if self.stream is None:         # started with file descriptor 1 closed (`rkvideo models >&-`)
            self.failed = OutputError("standard output is closed; nothing could be printed (redirect it to a "
                                      "file or /dev/null)")
            raise self.failed
        try:
            return call(self.stream)
        except BrokenPipeError:
            self.failed = ReaderGone()
            raise self.failed from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            self.failed = OutputError(f"cannot write to standard output: {reason}")
            raise self.failed from None

    def __getattr__(self, name):
        if name not in self.PASSED_ON:
            raise AttributeError(name)
        return getattr(self.stream, name)


@contextlib.contextmanager
def guarded_stdout():
    """Run the command line with ``GuardedOutput`` as ``sys.stdout``; what it printed is flushed
    before the status is decided (a full disk often shows only then)."""
    stream = sys.stdout
    guard = sys.stdout = GuardedOutput(stream)
    try:
        yield
        guard.flush()           # also raises a failure the command (or click) swallowed
    finally:
        sys.stdout = stream
        if guard.failed is not None:
            _discard(stream)


def _discard(stream) -> None:
    """Point a failed stdout at /dev/null, so the interpreter's last flush of the text still
    buffered in it cannot fail again after the error line ("Exception ignored …")."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (AttributeError, OSError, ValueError):    # no file descriptor (tests), or none left
        pass


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
        except OutputError:                   # said once, by run(), after the last flush
            raise
        except (KeyboardInterrupt, errors.RkvideoError) as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, errors.Interrupted))
            error("interrupted" if interrupted else str(exc))
            ctx.exit(errors.exit_code(exc))
        except OverflowError:                 # a number SQLite (or a C runtime) cannot hold
            error(f"a number given is too large (at most {SQLITE_MAX_INT})")
            ctx.exit(errors.EXIT_USAGE)
        if status:
            ctx.exit(status)
        return status


def run(group: click.Group, argv: list | None) -> int:
    """Run ``group`` on ``argv`` and return the exit status instead of leaving the process. Standard
    output is guarded from the start, so ``--help`` and ``--version`` into a full disk fail cleanly too."""
    try:
        with guarded_stdout():
            return group.main(args=argv, prog_name="rkvideo", standalone_mode=False) or errors.EXIT_OK
    except OutputError as exc:                # while click printed, or at the last flush
        error(str(exc))
        return errors.EXIT_RUNTIME
    except ReaderGone:                        # `rkvideo list | head`: the reader has what it wanted
        return errors.EXIT_OK
    except click.ClickException as exc:       # click's own usage errors: status 2
        exc.show()
        return exc.exit_code
    except click.Abort:                       # Ctrl-C while click itself was parsing
        error("interrupted")
        return errors.EXIT_INTERRUPTED
