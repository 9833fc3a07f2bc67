"""The ``rkvideo`` command line (click): one module per command group.

Every command documents itself with examples in ``--help``. Exit status: 0
success, 1 a runtime failure, 2 bad usage or bad input, 130 interrupted
(``common`` maps errors to these, in one place). Errors are one line on
stderr naming the file and the fix; ``--json`` output goes to stdout only.

Where each command lives: ``describe`` (describe.py), ``models``
(models.py), ``selftest`` (selftest.py), ``doctor`` (doctor.py), ``watch``
(watch.py), ``list``/``show``/``search``/``retry`` (jobs.py), ``outbox`` (outbox.py), ``serve``
(serve.py), ``forget`` (forget.py), ``workers`` (workers.py), ``migrate-db`` (migrate.py).

``main(argv)`` is the seam for tests and the console script: it returns the
exit status instead of leaving the process.
"""
from __future__ import annotations

import click

from .. import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from . import common, describe, doctor, forget, jobs, migrate, models, outbox, selftest, serve, watch, workers

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "main", "rkvideo"]

EPILOG = """\b
Examples:
  rkvideo describe clip.mp4                     describe one recording
  rkvideo watch /srv/cameras                    describe every new recording (daemon)
  rkvideo search "red car"                      find it again
  rkvideo selftest                              check this install on tiny generated models

Run `rkvideo COMMAND --help` for the examples of each command."""


@click.group("rkvideo", cls=common.Group, context_settings=common.CONTEXT, epilog=EPILOG,
             invoke_without_command=True)
@click.version_option(__version__, "--version", prog_name="rkvideo", message="%(prog)s %(version)s")
@click.pass_context
def rkvideo(ctx):
    """Turn video recordings and photos into searchable text with vision-language models on Rockchip
    RK3588 NPUs (or any PC with ONNX + GGUF models)."""
    if ctx.invoked_subcommand is None:      # `rkvideo` alone: the help, and status 2 as before
        click.echo(ctx.get_help())
        return EXIT_USAGE
    return None


for _command in (describe.command, models.command, selftest.command, doctor.command, watch.command,
                 *jobs.COMMANDS, serve.command, forget.command, workers.command, migrate.command):
    rkvideo.add_command(_command)
rkvideo.add_command(outbox.command)


def main(argv: list | None = None) -> int:
    """Run ``rkvideo`` with ``argv`` (default: the process arguments); returns the exit status."""
    return common.run(rkvideo, argv)
