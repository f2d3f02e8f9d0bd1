"""The ``avnbench`` command line: a thin layer over the core; the only place that prints.

Errors the user can fix (:class:`avnbench.errors.AvnbenchError`) become one line on stderr and
exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from avnbench import __version__
from avnbench.errors import AvnbenchError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="avnbench")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Benchmark methods for avascular necrosis of the femoral head on hip MRI."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_commands() -> None:
    # Each module adds its commands to `cli`; imported here so `avnbench --help` lists them all.
    from avnbench.cli import data  # noqa: F401

    for optional in ("data_io", "score", "methods", "run", "leaderboard", "ui"):
        try:
            __import__(f"avnbench.cli.{optional}")
        except ModuleNotFoundError as e:
            if e.name != f"avnbench.cli.{optional}":
                raise


_register_commands()


def _interrupt_on_sigterm() -> None:
    # A job scheduler's SIGTERM should end a run like Ctrl-C: MLflow marks it KILLED and the
    # next identical command resumes it.
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _interrupt_on_sigterm()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="avnbench", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except AvnbenchError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
