"""MkDocs hook: the CLI reference page is rendered from the `fewsam` Typer app at build time.

docs/cli.md holds a placeholder line; every command and sub-command of `fewsam.cli:app` replaces
it (usage, help, arguments and options as the command itself reports them), so the page cannot
drift from the code. mkdocs.yml names this file under `hooks:` and excludes it from the pages.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import typer
import typer.main
from mkdocs.exceptions import PluginError

PLACEHOLDER = "<!-- cli-reference -->"
PAGE = "cli.md"
PROGRAM = "fewsam"

_CODE_SPAN = re.compile(r"(`[^`]*`)")
# Characters that Markdown would read as emphasis, links or headings in help text.
_MARKDOWN_SPECIAL = re.compile(r"([\\*_\[\]#])")


def anchor(path: list[str]) -> str:
    """The heading id of a command path, e.g. fewsam-synth-preview."""
    return "-".join(path)


def prose(text: str) -> str:
    """Help text as literal Markdown: code spans kept, `<case>` and `refine_*` shown as typed."""
    parts = _CODE_SPAN.split(text)
    return "".join(
        part if i % 2 else _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(part, quote=False))
        for i, part in enumerate(parts)
    )


def commands(
    command: Any, ctx: typer.Context, path: list[str]
) -> Iterator[tuple[list[str], Any, typer.Context]]:
    """(path, command, context) of `command` and every command below it, in the app's order."""
    yield path, command, ctx
    if isinstance(command, typer.core.TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from commands(sub, typer.Context(sub, info_name=name, parent=ctx), path + [name])


def render_command(path: list[str], command: Any, ctx: typer.Context) -> str:
    level = "#" * min(len(path) + 1, 4)
    lines = [f"{level} `{' '.join(path)}` {{ #{anchor(path)} }}", ""]
    if command.help:
        lines += [prose(command.help), ""]
    usage = " ".join([*path, *command.collect_usage_pieces(ctx)])
    lines += ["```text", usage, "```", ""]
    records = {"argument": [], "option": []}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None and param.param_type_name in records:
            records[param.param_type_name].append(record)
    for kind, title in (("argument", "Arguments"), ("option", "Options")):
        if records[kind]:
            lines += [f"**{title}**", ""]
            lines += [
                f"- `{name}`" + (f": {prose(help_text)}" if help_text else "")
                for name, help_text in records[kind]
            ]
            lines.append("")
    if isinstance(command, typer.core.TyperGroup):
        lines += ["**Commands**", ""]
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_path = [*path, name]
            summary = sub.get_short_help_str(limit=120)
            lines.append(
                f"- [`{' '.join(sub_path)}`](#{anchor(sub_path)})"
                + (f": {prose(summary)}" if summary else "")
            )
        lines.append("")
    return "\n".join(lines)


def cli_reference() -> str:
    """Markdown for every command of the `fewsam` app."""
    from fewsam.cli import app  # imported at build time only: the hook loads no CLI otherwise

    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name=PROGRAM)
    return "\n".join(render_command(p, c, x) for p, c, x in commands(root, ctx, [PROGRAM]))


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if PLACEHOLDER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its placeholder line {PLACEHOLDER}")
    return markdown.replace(PLACEHOLDER, cli_reference())
