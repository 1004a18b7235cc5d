"""Typer commands of `evaluate`, `predict` and `report`: argument parsing only."""

from __future__ import annotations

from synth.cli_support import new_app

app = new_app("Score the adapted model and zero-shot SAM on the test volumes.")
