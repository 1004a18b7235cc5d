"""`fewsam ... --help` reads cleanly at any width: every command of the click tree is walked.

Flags (and --help) show no `<bool>` metavar, and no help text keeps a line break inside a
paragraph, which Typer's rich help would print as written, mid-sentence at any other width.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from core.cli_support import unwrap
from fewsam.cli import app


def _walk(command: Any, ctx: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, context) of `command` and of every command below it."""
    yield path, ctx
    for name, sub in getattr(command, "commands", {}).items():
        sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
        yield from _walk(sub, sub_ctx, (*path, name))


def _tree() -> list[tuple[tuple[str, ...], Any]]:
    root = typer.main.get_command(app)
    return list(_walk(root, root.context_class(root, info_name="fewsam"), ()))


PATHS = [path for path, _ in _tree()]


def _single_newline(text: str | None) -> bool:
    """True when `text` breaks a line inside a paragraph (a newline not part of a blank line)."""
    return bool(text) and "\n" in text.replace("\n\n", "")


def test_the_tree_holds_every_command() -> None:
    assert {("predict",), ("synth", "stats"), ("evaluate", "score"), ("data", "check")} <= set(
        PATHS
    )
    assert len(PATHS) > 20


def test_flags_and_help_show_no_metavar_and_help_texts_have_no_inner_line_break() -> None:
    for path, ctx in _tree():
        command = ctx.command
        where = " ".join(("fewsam", *path))
        for text in (command.help, command.short_help, command.get_short_help_str(1000)):
            assert not _single_newline(text), (where, text)
        params = command.get_params(ctx)
        help_option = command.get_help_option(ctx)
        assert help_option in params and help_option.display_type_rich(ctx) == "", where
        for param in params:
            assert not _single_newline(getattr(param, "help", None)), (where, param.name)
            if getattr(param, "is_flag", False):
                assert not param.display_type_rich(ctx), (where, param.name)
            else:
                assert param.display_type_rich(ctx), (where, param.name)  # values keep theirs


@pytest.mark.parametrize("width", ["60", "100"])
def test_rendered_help_shows_no_bool_metavar(width: str) -> None:
    for path in PATHS:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": width})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
        help_rows = [line for line in result.output.splitlines() if "--help" in line]
        assert len(help_rows) == 1 and "<" not in help_rows[0], (path, help_rows)


def test_a_wrapped_docstring_is_one_line_where_the_terminal_allows() -> None:
    """predict's docstring is wrapped in the source; at 200 columns its summary is one row."""
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    row = next(line for line in result.output.splitlines() if "predict " in line)
    assert "label maps keep the input's affine and header." in row, result.output


def test_unwrap_joins_lines_and_keeps_paragraphs() -> None:
    text = """First line
        goes on.

        Second paragraph
        here.
    """
    assert unwrap(text) == "First line goes on.\n\nSecond paragraph here."
    assert unwrap("one line") == "one line"
    assert unwrap(None) is None and unwrap("") == ""
