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

    for optional in ("data_io", "score", "methods", "run", "leaderboard", "report", "ui"):
        try:
            __import__(f"avnbench.cli.{optional}")
        except ModuleNotFoundError as e:
            if e.name != f"avnbench.cli.{optional}":
                raise


_register_commands()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run stops the same way (MLflow marks it KILLED)."""


# Exit statuses of an interrupted command, as a shell reports a process killed by the signal.
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
RESUME_HINT = "interrupted; re-run the same command to resume"


def _interrupt_on_sigterm() -> None:
    # A job scheduler's SIGTERM should end a run like Ctrl-C: MLflow marks it KILLED and the
    # next identical command resumes it.
    import signal

    def handler(signum, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, handler)


def _interrupted(interrupt: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(interrupt)
    click.echo(RESUME_HINT, err=True)
    sys.exit(EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED)


def _raised_by_the_cli(e: SystemExit) -> bool:
    """Whether a ``SystemExit`` comes from avnbench's own commands (and not, say, a plugin)."""
    import os

    tb = e.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == here


def _foreign_exit(e: SystemExit) -> None:
    # sys.exit() from a plugin or a library would otherwise end the command silently.
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" in {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
    click.echo(f"error: the command was ended by sys.exit({e.code!r}){where} (a plugin?); "
               "re-run with --debug for the traceback", err=True)
    sys.exit(e.code if isinstance(e.code, int) and e.code else 1)


def _is_store_error(error: BaseException) -> bool:
    """An error raised by MLflow or the database driver under it (checked by module name, so
    that mlflow is not imported for commands that never open a store)."""
    module = type(error).__module__ or ""
    return module.split(".")[0] in ("mlflow", "sqlalchemy", "sqlite3")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Exit statuses: 0 success, 2 an error the user can fix (one line on stderr), 130 Ctrl-C and
    143 SIGTERM (both print the hint to re-run the command, which resumes).
    """
    _interrupt_on_sigterm()
    args = argv if argv is not None else sys.argv[1:]
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="avnbench", standalone_mode=False)
    except click.exceptions.Abort as e:
        # click turns a KeyboardInterrupt (Ctrl-C, or SIGTERM through the handler) into Abort.
        interrupt = e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else None
        if interrupt is not None:
            _interrupted(interrupt, debug)
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except AvnbenchError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt as e:
        _interrupted(e, debug)
    except OSError as e:
        # A full disk, a read-only or vanished folder in the middle of work: one line naming
        # the file. Whatever was finished before stays (fold results and images are written
        # atomically), so re-running the same command resumes once the cause is fixed.
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"error: {where}{e.strerror or e} (free disk space or fix the folder's permissions, "
                   "then re-run the same command to resume)", err=True)
        sys.exit(2)
    except Exception as e:
        if debug or not _is_store_error(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        click.echo(f"error: the MLflow store failed ({first}); check free disk space and --tracking-uri "
                   "(or MLFLOW_TRACKING_URI), then re-run the same command to resume", err=True)
        sys.exit(2)
    except SystemExit as e:
        if _raised_by_the_cli(e):
            raise
        if debug:
            import traceback

            traceback.print_exception(e)
        _foreign_exit(e)
    if isinstance(code, int) and code:
        sys.exit(code)
