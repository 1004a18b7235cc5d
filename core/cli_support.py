"""Shared pieces of the Typer commands: the app and command classes, the --params option and
expected-error handling."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from core.errors import FewsamError
from core.params import Params, load_params

F = TypeVar("F", bound=Callable[..., Any])

PARAMS_OPTION = typer.Option(
    Path("params.yaml"), "--params", "-p", help="Parameters file.", dir_okay=False
)


_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def unwrap(text: str | None) -> str | None:
    """`text` with the line breaks inside each paragraph turned into spaces; blank lines (the
    paragraph breaks) kept.

    Typer's rich help prints a docstring's paragraphs with their line breaks as written, so a
    docstring wrapped for the source file would break mid-sentence at every terminal width.
    """
    if not text:
        return text
    paragraphs = _PARAGRAPH_BREAK.split(inspect.cleandoc(text))
    joined = (" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
    return "\n\n".join(p for p in joined if p)


def _flag_without_metavar(param: Any) -> Any:
    """`param` with an empty metavar when it is a flag: Typer's rich help would print `<bool>`
    beside it (and beside --help), though a flag takes no value."""
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    return param


def _tidy(command: Any) -> None:
    """Help texts unwrapped and flags without a metavar, for `command`'s own options."""
    command.help = unwrap(command.help)
    command.short_help = unwrap(command.short_help)
    for param in command.params:
        if getattr(param, "help", None):
            param.help = unwrap(param.help)
        _flag_without_metavar(param)


class Command(TyperCommand):
    """A command whose help reads the same at any width (see `unwrap`, `_flag_without_metavar`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy(self)

    def get_help_option(self, ctx: Any) -> Any:
        # click builds --help on first use, after __init__: tidied here.
        return _flag_without_metavar(super().get_help_option(ctx))


class Group(TyperGroup):
    """A command group whose help reads the same at any width, like `Command`'s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy(self)

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_without_metavar(super().get_help_option(ctx))


class App(typer.Typer):
    """A Typer app whose group is a `Group` and whose commands are `Command`s by default."""

    def command(self, name: str | None = None, *, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(name, cls=cls or Command, **kwargs)


def new_app(help_text: str) -> App:
    """A Typer app with the project's settings (no locals in tracebacks, no shell completion,
    help that rewraps at any width)."""
    return App(
        cls=Group,
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
