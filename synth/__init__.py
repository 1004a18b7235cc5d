"""Datasets, exemplar extraction and exemplar-guided synthesis (the data half of fewsam).

Importing `synth` loads no CLI. The `app` attribute is resolved on first access (PEP 562) so
that `typer synth run preview` finds the `synth` Typer app, as `fewsam synth preview` does.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":  # only the `typer synth run ...` entry point asks for it
        from fewsam.cli_synth import app

        return app
    raise AttributeError(f"module 'synth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["app"]
