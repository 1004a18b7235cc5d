"""`fewsam train summary`: trainable parameters per module for the configured model.

Builds the model with random weights (no checkpoint needed, no forward pass), so the figure is
available before any download: the count depends on the arch, LoRA settings and class count only.
"""

from __future__ import annotations

import dataclasses

import typer
from rich.console import Console
from rich.table import Table

from core.params import Params
from train.lora import count_lora_modules
from train.model import FewSam, build_fewsam


def group_of(name: str) -> str:
    """Summary row of a parameter: `image_encoder LoRA`, `mask_decoder.mask_tokens`, ..."""
    parts = name.removeprefix("sam.").split(".")
    if any(p.startswith("lora_") for p in parts):
        where = "image_encoder" if parts[0] == "image_encoder" else ".".join(parts[:2])
        return f"{where} LoRA"
    return ".".join(parts[:2]) if parts[0] == "mask_decoder" else parts[0]


def trainable_by_module(model: FewSam) -> dict[str, int]:
    """Number of trainable parameters per summary row, in model order."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            group = group_of(name)
            counts[group] = counts.get(group, 0) + p.numel()
    return counts


def run(params: Params, arch: str | None, num_classes: int) -> FewSam:
    """Print the table for params' model (or `arch`) with `num_classes` foreground classes."""
    model_params = dataclasses.replace(params.model, checkpoint=None)
    if arch is not None:
        model_params = dataclasses.replace(model_params, arch=arch)
    model = build_fewsam(model_params, params.lora, num_classes)
    lora = params.lora
    table = Table(title=None, show_footer=True)
    rows = trainable_by_module(model)
    trained = sum(rows.values())
    total = sum(p.numel() for p in model.parameters())
    table.add_column("trainable module", footer="total trainable")
    table.add_column("parameters", justify="right", footer=f"{trained:,}")
    for group, n in rows.items():
        table.add_row(group, f"{n:,}")
    wrapped = count_lora_modules(model.sam)
    console = Console(width=100)
    if lora.finetune == "full":
        how = "full fine-tuning (every base weight trains, no LoRA)"
    else:
        how = (
            f"LoRA rank {lora.rank} (alpha {lora.alpha:g}) on {wrapped['image_encoder']} encoder "
            f"and {wrapped['mask_decoder']} decoder modules"
        )
    if lora.fine_head:
        how += ", and a full-resolution fine head"
    console.print(
        f"{model_params.arch}, input {model_params.input_size} px, {num_classes} classes, {how}"
    )
    console.print(table)
    typer.echo(
        f"trainable {trained:,} of {total:,} parameters ({100 * trained / total:.2f}%), "
        f"{trained / 1e6:.2f}M"
    )
    return model
