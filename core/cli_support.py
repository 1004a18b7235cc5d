"""Shared pieces of the Typer commands: the --params option and expected-error handling."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from core.errors import FewsamError
from core.params import Params, load_params

F = TypeVar("F", bound=Callable[..., Any])

PARAMS_OPTION = typer.Option(
    Path("params.yaml"), "--params", "-p", help="Parameters file.", dir_okay=False
)


def new_app(help_text: str) -> typer.Typer:
    """A Typer app with the project's settings (no locals in tracebacks, no shell completion)."""
    return typer.Typer(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )


def fail(message: str) -> typer.Exit:
    """Print one line on stderr and return the exit to raise (code 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def expected_errors(func: F) -> F:
    """Turn expected errors (bad input, bad params, unwritable paths) into one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FewsamError as e:
            raise fail(str(e)) from None
        except OSError as e:
            where = e.filename if e.filename is not None else "file"
            raise fail(f"{where}: {e.strerror or e}") from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def read_params(path: Path) -> Params:
    """Load params for a command (errors are ParamsError, handled by `expected_errors`)."""
    return load_params(path)
