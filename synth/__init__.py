"""Datasets, exemplar extraction and exemplar-guided synthesis (the data half of fewsam).

`app` is the `synth` Typer app, so `typer synth run preview` works as well as `fewsam synth preview`.
"""

from synth.cli import app, data_app

__all__ = ["app", "data_app"]
