"""Typer commands of the `train` sub-app: argument parsing only, work is in stages."""

from __future__ import annotations

from synth.cli_support import new_app

app = new_app("Fine-tune SAM with LoRA, inspect the model, fetch or pretrain base weights.")
