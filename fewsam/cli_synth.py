"""Typer commands of the `synth` sub-app: argument parsing only, the work is in `synth`, the
pseudo-labels in `evaluate.pseudo` and the previews in `fewsam.preview` / `fewsam.synth_stats`."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli_support import PARAMS_OPTION, expected_errors, new_app, read_params

app = new_app("Exemplars and exemplar-guided synthesis.")


@app.command("suggest")
@expected_errors
def synth_suggest(
    params: Path = PARAMS_OPTION,
    n: int = typer.Option(6, "--n", help="Number of new slices to label (>= 1)."),
    out: Path | None = typer.Option(
        None, help="Annotation folder (default: dataset.annotations); earlier rows are kept."
    ),
    strategy: str | None = typer.Option(
        None, help="spread | random | diverse | uncertain (default: suggest.strategy)."
    ),
    adapter: Path | None = typer.Option(
        None, help="Adapter folder: drafts from its predictions; needed by `uncertain`."
    ),
    seed: int | None = typer.Option(None, help="Seed of the choice (default: params seed)."),
) -> None:
    """Pick the training slices worth labeling; write slices.csv, label files and a contact sheet."""
    from suggest import run as suggest

    p = read_params(params)
    suggest.run(p, out or Path(p.dataset.annotations), n, strategy, adapter, seed)


@app.command("extract")
@expected_errors
def synth_extract(
    params: Path = PARAMS_OPTION,
    out: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5."),
    csv: Path = typer.Option(Path("data/exemplars.csv"), help="One row per exemplar."),
) -> None:
    """Stage 1: pick the labeled exemplar slices and the unlabeled background pool."""
    from synth import exemplars

    exemplars.run(read_params(params), out, csv)


@app.command("run")
@expected_errors
def synth_run(
    params: Path = PARAMS_OPTION,
    exemplars: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5 (stage 1)."),
    out: Path = typer.Option(Path("data/synthetic.h5"), help="Synthetic set HDF5."),
) -> None:
    """Stage 2: synthesize the labeled training set from the exemplars."""
    from synth import synthesize

    synthesize.run(read_params(params), exemplars, out)


@app.command("pseudo")
@expected_errors
def synth_pseudo(
    params: Path = PARAMS_OPTION,
    adapter: Path | None = typer.Option(None, help="Teacher: an adapter folder."),
    unet: Path | None = typer.Option(None, help="Teacher: a U-Net folder (instead of --adapter)."),
    data: Path = typer.Option(Path("data/synthetic.h5"), help="Synthetic set the output extends."),
    exemplars: Path = typer.Option(
        Path("data/exemplars.h5"), help="Exemplars HDF5: their slices are not pseudo-labeled."
    ),
    out: Path = typer.Option(Path("data/selftrain.h5"), help="Synthetic set HDF5 to write."),
) -> None:
    """Self-training: the synthetic set plus the training slices a trained model labels
    prompt-free; train on it with `fewsam train run/baseline --data`."""
    from evaluate import pseudo

    record = pseudo.run(read_params(params), data, exemplars, out, adapter, unet)
    typer.echo(pseudo.describe(record, out))


@app.command("preview")
@expected_errors
def synth_preview(
    params: Path = PARAMS_OPTION,
    n: int = typer.Option(16, "--n", min=1, help="Number of samples shown."),
    out: Path = typer.Option(Path("reports/synth_preview.png"), help="PNG to write."),
    seed: int | None = typer.Option(
        None, help="Show n samples drawn with this seed instead of the first n."
    ),
    synthetic: Path = typer.Option(
        Path("data/synthetic.h5"), help="Synthetic set; synthesized on the fly when missing."
    ),
    exemplars: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5."),
) -> None:
    """Render synthetic samples next to their exemplars, labels overlaid, as a PNG grid."""
    from fewsam import preview

    written = preview.run(read_params(params), exemplars, synthetic, out, n, seed)
    typer.echo(f"wrote {written}")


@app.command("stats")
@expected_errors
def synth_stats(
    exemplars: Path = typer.Option(Path("data/exemplars.h5"), help="Exemplars HDF5."),
    synthetic: Path = typer.Option(Path("data/synthetic.h5"), help="Synthetic set HDF5."),
    check: bool = typer.Option(
        False, help="Exit 1 when a sample has more components of a class than its exemplar."
    ),
) -> None:
    """Per class: slices and pixels carrying it, in the exemplars and in the synthetic set, and
    connected components per sample against its exemplar (duplicated structures)."""
    from fewsam import synth_stats as stats

    result = stats.run(exemplars, synthetic)
    typer.echo(result.text)
    if check and result.failing:
        raise typer.Exit(1)
