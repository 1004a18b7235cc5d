"""Typer commands of `evaluate` and the top-level `predict`: parsing only."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli_support import PARAMS_OPTION, expected_errors, new_app, read_params

app = new_app("Segment the test volumes (infer), then score the label maps (score).")

ADAPTER_OPTION = typer.Option(Path("models/adapter"), help="Adapter folder (from `train run`).")
PROTOCOL_OPTION = typer.Option(
    None,
    help="transunet | strict (default: evaluate.protocol, or transunet with --gt).",
    show_default=False,
)


@app.command("infer")
@expected_errors
def evaluate_infer(
    params: Path = PARAMS_OPTION,
    adapter: Path = ADAPTER_OPTION,
    unet: Path | None = typer.Option(
        None,
        help="U-Net baseline folder (from `train baseline`) to score beside the adapter.",
        show_default=False,
    ),
    out: Path = typer.Option(Path("reports"), help="Folder for predictions/ and overlays/."),
) -> None:
    """Stage infer: label maps of the test volumes (adapted, U-Net, zero-shot) on their source grid."""
    from evaluate import infer

    infer.run(read_params(params), adapter, out, unet)


@app.command("score")
@expected_errors
def evaluate_score(
    params: Path = PARAMS_OPTION,
    pred: Path = typer.Option(
        Path("reports/predictions"),
        help="Label maps: <method>/<case>.nii.gz subfolders, or <case>.nii.gz (one method).",
    ),
    gt: Path | None = typer.Option(
        None,
        help="Folder of ground-truth <case>.nii.gz label maps; without it, the test cases of "
        "the params' dataset.",
        show_default=False,
    ),
    out: Path = typer.Option(Path("reports"), help="Folder for metrics.json and the CSVs."),
    protocol: str | None = PROTOCOL_OPTION,
    classes: str | None = typer.Option(
        None,
        help='Class names of ids 1..K with --gt, e.g. "liver,spleen"; needed unless a '
        "dataset.json in or just above --gt names them.",
        show_default=False,
    ),
) -> None:
    """Stage score: Dice and HD95 per class of prediction folders against the ground truth."""
    from evaluate import score

    score.run(params, pred, out, gt, protocol, classes)


@expected_errors
def predict(
    adapter: Path = ADAPTER_OPTION,
    input: Path = typer.Option(
        ..., "--input", "-i", help="A scan (.nii.gz, 3D or 4D), a case folder, or a folder of them."
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="A .nii.gz file for one scan, else a folder."
    ),
    params: Path = PARAMS_OPTION,
    checkpoint: str | None = typer.Option(
        None, help="Base SAM weights, when not at the path the adapter recorded."
    ),
    unet: Path | None = typer.Option(
        None,
        help="Segment with the U-Net baseline of this folder (models/unet) instead of the adapter.",
    ),
    refine: str = typer.Option(
        "none",
        help="Refine each organ's outline with SAM prompted by the box of the model's mask: "
        "none, litemedsam (the litemedsam extra of the package; about 1 s per slice on 2 CPU cores) "
        "or base (the base SAM of params.yaml). Margin and trust: evaluate.refine_* in params.",
    ),
) -> None:
    """Segment new scans with a trained adapter (or the U-Net baseline); label maps keep the
    input's affine and header.

    Each class keeps only its largest 3D connected component (evaluate.postprocess in the
    params; none turns it off)."""
    from evaluate import predict as predict_stage

    written = predict_stage.run(
        read_params(params), adapter, input, output, checkpoint, unet, refine=refine
    )
    for path in written:
        typer.echo(str(path))
