"""The documentation: the site builds with no warning, the README stays a front page, and the CLI
reference covers every command of the `fewsam` app."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.main
from conftest import REPO

README_MAX_LINES = 200


@pytest.fixture(scope="module")
def built_site(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess, Path]:
    """`mkdocs build --strict` of the repository into a temporary folder (run once per module)."""
    site = tmp_path_factory.mktemp("site")
    # The banner is Material's notice of its end of life, no build warning: kept out of the log.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    return done, site


def _log(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def command_paths() -> list[str]:
    """Every command path of the app, e.g. `fewsam synth preview`, walked from its click group."""
    from fewsam.cli import app

    paths: list[str] = []

    def walk(command, ctx: typer.Context, path: list[str]) -> None:
        paths.append(" ".join(path))
        for name in getattr(command, "commands", {}):
            sub = command.commands[name]
            walk(sub, typer.Context(sub, info_name=name, parent=ctx), [*path, name])

    root = typer.main.get_command(app)
    walk(root, typer.Context(root, info_name="fewsam"), ["fewsam"])
    return paths


def headings(page: str) -> set[str]:
    """The text of every heading of an HTML page, tags and permalink signs removed."""
    found = re.findall(r"<h([1-6])[^>]*>(.*?)</h\1>", page, flags=re.S)
    return {
        html.unescape(re.sub(r"<[^>]+>", "", text)).replace("¶", "").strip() for _, text in found
    }


@pytest.mark.slow
def test_site_builds_strict(built_site: tuple[subprocess.CompletedProcess, Path]) -> None:
    done, site = built_site
    assert done.returncode == 0, _log(done)
    assert (site / "index.html").is_file()


def test_readme_is_a_short_front_page_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for command in ("make repro", "make test"):
        assert re.search(rf"^{command}\b", text, flags=re.M), command


def test_command_paths_walks_nested_groups() -> None:
    paths = command_paths()
    assert {"fewsam", "fewsam synth", "fewsam synth preview", "fewsam evaluate score"} <= set(paths)


@pytest.mark.slow
def test_cli_reference_has_a_heading_for_every_command(
    built_site: tuple[subprocess.CompletedProcess, Path],
) -> None:
    done, site = built_site
    assert done.returncode == 0, _log(done)
    page = (site / "cli" / "index.html").read_text()
    missing = [path for path in command_paths() if path not in headings(page)]
    assert missing == [], f"the CLI reference lacks {missing}"
