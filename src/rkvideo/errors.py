"""Every error rkvideo raises on purpose, in three kinds, and what each kind means.

Why one root with three kinds: the two places that must act on an error — the
command line (an exit code) and the daemon (fail a job now, retry it later, or
put it back) — decide by the *kind* of failure, never by which stage raised
it. A stage raises its own class (``MediaError``, ``LLMError``…) derived from
one of the kinds; the edges test ``isinstance`` against the kinds only, so a
new stage error can never fall through a list of classes that someone forgot
to extend.

* ``UsageError``: the input or the configuration is wrong; trying again cannot
  help. Exit status 2; a queued job fails at once.
* ``RuntimeFailure``: something failed while running (a runtime return code, a
  database that cannot be written); trying again may help. Exit status 1; a
  queued job is retried with back-off.
* ``Interrupted``: a stop was asked for (Ctrl-C, SIGTERM). Exit status 130; a
  running job goes back to the queue without counting the attempt.

The exit codes live here and in ``cli`` only.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class RkvideoError(Exception):
    """The root of every error rkvideo raises on purpose; the message is one line naming the file
    (or setting) and the fix."""

    exit_code = EXIT_RUNTIME


class UsageError(RkvideoError, ValueError):
    """Bad input or configuration: a retry cannot help."""

    exit_code = EXIT_USAGE


class RuntimeFailure(RkvideoError, RuntimeError):
    """A failure while running that a later try may not meet."""

    exit_code = EXIT_RUNTIME


class Interrupted(RkvideoError):
    """A stop was asked for (Ctrl-C, SIGTERM) and the work was abandoned."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str = "interrupted"):
        super().__init__(message)


def exit_code(exc: BaseException) -> int:
    """The process exit status for an error that reached the command line."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, RkvideoError):
        return exc.exit_code
    return EXIT_RUNTIME
