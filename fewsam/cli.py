"""The `fewsam` console script: the sub-apps of each package under one command."""

from __future__ import annotations

import evaluate.cli
import train.cli
from fewsam import experiments_cli
from synth.cli import app as synth_app
from synth.cli import data_app
from synth.cli_support import new_app

app = new_app("Few-exemplar fine-tuning of Segment Anything for medical image segmentation.")
app.add_typer(data_app, name="data")
app.add_typer(synth_app, name="synth")
app.add_typer(train.cli.app, name="train")
app.add_typer(evaluate.cli.app, name="evaluate")
app.command("predict")(evaluate.cli.predict)
app.command("grid")(experiments_cli.grid)
app.command("report")(experiments_cli.report)


def main() -> None:
    app()
