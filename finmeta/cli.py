"""The ``finmeta`` command line (typer).

Each layer contributes its commands from its own ``cli.py``:

* ``finmeta data ...``  -- :mod:`data_processors.cli`
* ``finmeta metrics|report`` -- :mod:`benchmarks.cli`; ``bench|train|backtest`` -- :mod:`benchmarks.cli_run`;
  ``tune`` -- :mod:`benchmarks.cli_tune`
* ``finmeta trade ...`` -- :mod:`trade.cli`

User errors (:class:`finmeta.errors.FinMetaError`) print one line and exit with code 2; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import contextvars
import sys

import typer

from finmeta import __version__
from finmeta.errors import FinMetaError

app = typer.Typer(
    rich_markup_mode=None,  # plain click help: no <bool> type labels, defaults wrapped not cut
    name="finmeta",
    help="FinMeta: data -> market environments -> agents -> benchmarks.\n\nExample: finmeta bench quickstart",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_STATE = {"debug": False}


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    _STATE["debug"] = debug
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:  # `finmeta --debug` alone: the help, as `finmeta`
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


def _register() -> None:
    from data_processors.cli import data_app

    app.add_typer(data_app, name="data")
    from benchmarks.cli_run import register as register_run

    register_run(app)
    from benchmarks.cli_tune import register as register_tune

    register_tune(app)
    from trade.cli import register as register_trade

    register_trade(app)
    try:
        from benchmarks.cli import register as register_bench
    except ModuleNotFoundError as exc:  # pragma: no cover - layer not installed yet
        if exc.name not in ("benchmarks.cli",):
            raise
    else:
        register_bench(app)


_register()


def _click_exception_types() -> tuple[type, ...]:
    """ClickException classes: typer >= 0.29 vendors its own click copy (``typer._click``)."""
    types: list[type] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(__import__(mod, fromlist=["ClickException"]).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def _is_click_exception(exc: BaseException) -> bool:
    return isinstance(exc, _click_exception_types())


#: the arguments of the ``finmeta`` command :func:`main` is running (set for the call, then reset)
_ARGV: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("finmeta_argv", default=None)


def invoked_command() -> str:
    """The running ``finmeta ...`` command line, for run manifests: the arguments :func:`main` was
    called with, or ``sys.argv`` outside :func:`main`."""
    import shlex

    args = _ARGV.get()
    return shlex.join(["finmeta", *(sys.argv[1:] if args is None else args)])


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    token = _ARGV.set(tuple(args))
    try:
        return _main_call(args)
    finally:
        _ARGV.reset(token)


def _main_call(args: list[str]) -> int:
    debug = "--debug" in args
    try:
        rc = app(args=args, standalone_mode=False)  # a command's typer.Exit(n) comes back as n here
    except FinMetaError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if debug:
            raise
        typer.echo(f"error: cannot read {getattr(exc, 'filename', '') or exc}: {exc.strerror or exc}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        if _is_click_exception(exc):
            exc.show()
            return 2
        raise
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
