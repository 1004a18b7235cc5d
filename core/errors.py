"""Expected errors: the CLI turns each into one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path


class FewsamError(Exception):
    """Base class of errors caused by the user's input, not by a bug."""


class ParamsError(FewsamError):
    """A missing, unknown, mistyped or out-of-range parameter."""


class InputError(FewsamError):
    """A file or folder that cannot be used; the message names it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
