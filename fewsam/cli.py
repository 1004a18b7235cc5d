"""The `fewsam` console script: the sub-apps under one command. Nothing imports this module."""

from __future__ import annotations

from core.cli_support import new_app
from fewsam import cli_annotate, cli_data, cli_evaluate, cli_grid, cli_synth, cli_train

app = new_app("Few-exemplar fine-tuning of Segment Anything for medical image segmentation.")
app.add_typer(cli_data.app, name="data")
app.add_typer(cli_synth.app, name="synth")
app.add_typer(cli_train.app, name="train")
app.add_typer(cli_evaluate.app, name="evaluate")
app.command("predict")(cli_evaluate.predict)
app.command("grid")(cli_grid.grid)
app.command("report")(cli_grid.report)
app.command("annotate")(cli_annotate.annotate)


def main() -> None:
    app()
