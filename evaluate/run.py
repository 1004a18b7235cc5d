"""Stage 4 entry point: score the adapted model and zero-shot SAM on the test volumes.

For each test case (at most `evaluate.max_cases`): the adapted model prompt-free and prompted,
and, with `evaluate.zero_shot`, base SAM prompted with one interior point per class; each label
map scored per class under `evaluate.protocol`. Writes under `out`:

    metrics.json            means and per-class scores of every method (DVC metrics)
    per_case.csv            one row per (case, method, class)
    per_class.csv           per-class Dice of every method (the DVC bar plot)
    overlays/<case>_z<k>.png
    predictions/<method>/<case>.nii.gz   label maps in the source geometry, affine and header
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from core.atomic import ensure_parent
from core.device import pick_device
from core.errors import InputError
from core.params import Params
from core.progress import track
from core.volume import Volume
from evaluate import reports
from evaluate.inference import gt_prompts, predict_volume
from evaluate.protocols import ClassScore, Summary, score_case, summarize
from evaluate.zero_shot import zero_shot_volume
from synth.datasets import open_dataset
from train.adapter_io import CONFIG_FILE, load_adapter, read_adapter_config
from train.base_weights import load_sam


def check_adapter(
    config: dict[str, Any],
    params: Params,
    classes: tuple[str, ...],
    channels: tuple[str, ...],
    where: Path,
) -> None:
    """The adapter must have been trained for this dataset's classes and channels and this model."""
    if tuple(config.get("classes", ())) != classes:
        raise InputError(
            where,
            f"adapter classes {config.get('classes')} differ from the dataset's {list(classes)}",
        )
    if tuple(config.get("channels", ())) != channels:
        raise InputError(
            where,
            f"adapter channels {config.get('channels')} differ from the dataset's {list(channels)}",
        )
    for key, want in (("arch", params.model.arch), ("input_size", params.model.input_size)):
        if config.get(key) != want:
            raise InputError(
                where, f"adapter has {key} {config.get(key)}, params say model.{key} {want}"
            )
    # Zero-shot SAM must be the very base the adapter was trained on.
    if (config.get("base_checkpoint") is None) != (params.model.checkpoint is None):
        raise InputError(
            where,
            f"adapter base {config.get('base_checkpoint')} but model.checkpoint is "
            f"{params.model.checkpoint}",
        )


def source_geometry(volume: Volume, label: np.ndarray) -> np.ndarray:
    """`label` (Z x H x W) on the in-plane grid of the source file, nearest neighbour.

    Readers may resize slices (`dataset.slice_size`); the source header still has the file's
    I x J x K shape, and predictions are written on that grid.
    """
    shape = getattr(volume.header, "get_data_shape", lambda: None)()
    if shape is None or len(shape) < 3:
        return label
    h, w = int(shape[1]), int(shape[0])
    if label.shape[1:] == (h, w):
        return label
    out = np.empty((label.shape[0], h, w), np.uint8)
    for z in range(label.shape[0]):
        out[z] = cv2.resize(label[z], (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return out


def per_class_table(summaries: dict[str, Summary], classes: tuple[str, ...], unit: str) -> Table:
    """Rich table: one row per class and the mean, Dice and HD95 of each method."""
    table = Table(title=f"Test set: Dice and HD95 ({unit})")
    table.add_column("class")
    for method in summaries:
        table.add_column(f"{reports.METHOD_TITLES[method]}\nDice", justify="right")
        table.add_column("HD95", justify="right")

    def fmt(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for i, name in enumerate(classes):
        cells = []
        for s in summaries.values():
            cells += [fmt(s.class_dice[i], 3), fmt(s.class_hd95[i], 2)]
        table.add_row(name, *cells)
    means = []
    for s in summaries.values():
        means += [fmt(s.dice, 3), fmt(s.hd95, 2)]
    table.add_row("[bold]mean[/bold]", *means)
    return table


def run(params: Params, adapter: Path, out: Path) -> dict[str, Any]:
    """Evaluate the adapter in `adapter` on the test split; write the reports under `out`.

    Returns the metrics dictionary also written to `out/metrics.json`.
    """
    ep = params.evaluate
    ensure_parent(out / "metrics.json")  # an unwritable `out` fails before any case is scored
    reader = open_dataset(params.dataset, params.seed)
    classes, k = tuple(reader.classes), len(reader.classes)
    config = read_adapter_config(adapter)
    check_adapter(config, params, classes, tuple(reader.channels), Path(adapter) / CONFIG_FILE)
    model, config = load_adapter(adapter, params.model.checkpoint)
    device = pick_device(params.train.device)
    model = model.to(device)
    sam = None
    if ep.zero_shot:
        sam = load_sam(params.model.arch, params.model.checkpoint, params.model.input_size)
        sam = sam.to(device)
    cases = reader.cases("test")
    if ep.max_cases:
        cases = cases[: ep.max_cases]
    if not cases:
        raise InputError(params.dataset.root, "no test case to evaluate")
    points = params.train.points_per_class

    for stale in ("overlays", "predictions"):  # outputs of a previous run with other cases
        shutil.rmtree(out / stale, ignore_errors=True)
        # Created even when nothing goes in (overlays_per_case: 0): DVC expects every output.
        (out / stale).mkdir(parents=True)
    methods = ["prompt_free", "prompted"] + (["zero_shot"] if sam is not None else [])
    results: dict[str, dict[str, list[ClassScore]]] = {m: {} for m in methods}
    for case in track(cases, "evaluate"):
        volume = reader.load(case)
        assert volume.label is not None
        preds = {
            "prompt_free": predict_volume(model, volume.image, ep.batch_size),
            "prompted": predict_volume(
                model,
                volume.image,
                ep.batch_size,
                prompts=gt_prompts(volume.label, k, points, params.seed, case),
            ),
        }
        if sam is not None:
            preds["zero_shot"] = zero_shot_volume(sam, volume.image, volume.label, k, ep.batch_size)
        for method, pred in preds.items():
            results[method][case] = score_case(pred, volume.label, k, volume.spacing, ep.protocol)
            reports.write_nifti(
                out / "predictions" / method / f"{case}.nii.gz",
                source_geometry(volume, pred),
                volume.affine,
                volume.header,
            )
        for z in reports.overlay_slices(volume.label, ep.overlays_per_case):
            panels = {"ground truth": volume.label[z]}
            panels.update({reports.METHOD_TITLES[m]: p[z] for m, p in preds.items()})
            reports.write_overlay(
                out / "overlays" / f"{case}_z{z:03d}.png",
                volume.image[0, z],
                panels,
                classes,
                f"{case}, slice {z}",
            )
        del volume, preds
        if device.type == "cuda":
            torch.cuda.empty_cache()

    summaries = {m: summarize(list(results[m].values()), k) for m in methods}
    metrics = reports.metrics_dict(ep.protocol, classes, len(cases), summaries)
    reports.write_per_case(out / "per_case.csv", results, classes)
    reports.write_per_class(out / "per_class.csv", summaries, classes)
    reports.write_metrics(out / "metrics.json", metrics)
    # Off a terminal (DVC logs, pipes) rich would wrap the table at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(per_class_table(summaries, classes, metrics["hd95_unit"]))
    return metrics
