"""Stage `infer`: the label maps of every method on the test cases, and overlays of a few slices.

For each test case (at most `evaluate.max_cases`): the adapted model prompt-free and prompted
(ground-truth points as in training, `train.points_per_class` per present class and slice), the
U-Net baseline when one was trained (`unet`, prompt-free, package `baseline`), these three
post-processed as `evaluate.postprocess` says (module `evaluate.postprocess`); the two
prompt-free ones refined by SAM from boxes when `evaluate.refine` names a refiner
(`prompt_free_refined`, `unet_refined`; module `evaluate.refine`); and base SAM per entry of
`evaluate.zero_shot_prompts`: `zero_shot`, one interior point per present class, and
`zero_shot_box`, the tight box of each present class (module `evaluate.zero_shot`). The models see
the slices at `dataset.slice_size`, as in training; their logits are upsampled to the case's
source in-plane size before the argmax or threshold (`predict_volume`'s `out_hw`, the path
`fewsam predict` takes too), so every label map lies on the source grid and is written with the
source affine and header (layout in `evaluate.layout`). Scores come from the `score` stage, which
reads these files: a change of protocol re-scores without running a model.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam

from annotate.engines import Engine
from baseline.io import load_unet
from baseline.network import predict_unet
from core.atomic import ensure_parent
from core.device import pick_device
from core.params import Params, ZeroShotPrompt
from core.progress import track
from core.volume import Volume
from evaluate import reports
from evaluate.adapter_check import load_dataset_adapter
from evaluate.inference import PromptFn, gt_prompts, predict_volumes
from evaluate.layout import (
    OVERLAYS,
    PREDICTIONS,
    ZERO_SHOT_METHODS,
    evaluation_cases,
    prediction_path,
)
from evaluate.postprocess import postprocess
from evaluate.refine import Trust, open_refiner, refine_volumes
from evaluate.reports import ADAPTED, REFINED, UNET
from evaluate.zero_shot import zero_shot_volumes
from synth.datasets import BaseReader, open_dataset
from synth.datasets.base import resize_volume
from train.base_weights import load_sam
from train.model import FewSam


@dataclass(frozen=True)
class Models:
    """The adapted model, the U-Net baseline (when trained) and, when zero-shot SAM is
    evaluated, its base, on one device, with the prompt kinds of the zero-shot baselines (none
    without `sam`)."""

    adapted: FewSam
    sam: Sam | None
    prompts: tuple[ZeroShotPrompt, ...] = ("point", "box")
    unet: torch.nn.Module | None = None
    refiner: Engine | None = None

    @property
    def zero_shot_prompts(self) -> tuple[ZeroShotPrompt, ...]:
        """The prompt kinds in the order of every report (point, then box)."""
        if self.sam is None:
            return ()
        order: tuple[ZeroShotPrompt, ...] = ("point", "box")
        return tuple(p for p in order if p in self.prompts)

    @property
    def methods(self) -> tuple[str, ...]:
        unet = (UNET,) if self.unet is not None else ()
        refined = tuple(REFINED[m] for m in ("prompt_free", *unet)) if self.refiner else ()
        zero_shot = tuple(ZERO_SHOT_METHODS[p] for p in self.zero_shot_prompts)
        return ADAPTED + unet + zero_shot + refined


def load_models(
    params: Params, adapter: Path, reader: BaseReader, unet: Path | None = None
) -> Models:
    """The adapter (checked against the dataset and params first), the U-Net of the folder
    `unet` (None, or a folder of a disabled baseline: none) and zero-shot SAM."""
    model = load_dataset_adapter(adapter, params, reader.classes, reader.channels)
    device = pick_device(params.train.device)
    sam = None
    prompts = params.evaluate.zero_shot_prompts
    if prompts:
        sam = load_sam(params.model.arch, params.model.checkpoint, params.model.input_size)
        sam = sam.to(device)
    net = None
    if unet is not None:
        net = load_unet(unet, reader.classes, reader.channels, params.dataset.slice_size)
    refiner = None
    if params.evaluate.refine != "none":
        refiner = open_refiner(params.evaluate.refine, params.model, len(reader.classes))
    return Models(model.to(device), sam, prompts, None if net is None else net.to(device), refiner)


def predict_case(models: Models, source: Volume, params: Params) -> dict[str, np.ndarray]:
    """method -> Z x H x W uint8 label map of `source` (a volume on its source grid).

    An unlabeled test scan gets the prompt-free label map only: the prompted modes take their
    points from the ground truth.
    """
    view = resize_volume(source, params.dataset.slice_size)  # the slices the models take
    out_hw = (int(source.image.shape[2]), int(source.image.shape[3]))
    k, batch = models.adapted.num_classes, params.evaluate.batch_size
    ev = params.evaluate

    def trained(label: np.ndarray) -> np.ndarray:
        return postprocess(label, k, ev.postprocess)

    prompt_sets: list[PromptFn | None] = [None]  # prompt-free; prompted too when labeled
    if view.label is not None:
        prompt_sets.append(
            gt_prompts(view.label, k, params.train.points_per_class, params.seed, source.case)
        )
    adapted = predict_volumes(models.adapted, view.image, batch, prompt_sets, out_hw=out_hw)
    preds = {"prompt_free": trained(adapted[0])}
    if models.unet is not None:
        preds[UNET] = trained(predict_unet(models.unet, view.image, batch, out_hw=out_hw))
    if models.refiner is not None:
        # On the source grid, where the label maps lie: the refiner resizes to its own input.
        unrefined = {m: preds[m] for m in REFINED if m in preds}
        refined = refine_volumes(
            models.refiner, source.image, unrefined, k, ev.refine_margin, Trust.of(ev)
        )
        preds.update({REFINED[m]: label for m, label in refined.items()})
    if view.label is None:
        return preds
    preds["prompted"] = trained(adapted[1])
    if models.sam is not None and models.zero_shot_prompts:
        zero_shot = zero_shot_volumes(
            models.sam, view.image, view.label, k, batch, models.zero_shot_prompts, out_hw=out_hw
        )
        preds.update({ZERO_SHOT_METHODS[p]: pred for p, pred in zero_shot.items()})
    return preds


def write_overlays(
    folder: Path, source: Volume, preds: dict[str, np.ndarray], classes: tuple[str, ...], count: int
) -> None:
    """`count` slices of the case's labeled range: image, ground truth and every method (an
    unlabeled scan: the range its prompt-free label map covers, and no ground truth)."""
    shown = source.label if source.label is not None else preds["prompt_free"]
    for z in reports.overlay_slices(shown, count):
        panels = {"ground truth": source.label[z]} if source.label is not None else {}
        panels.update({reports.METHOD_TITLES[m]: p[z] for m, p in preds.items()})
        reports.write_overlay(
            folder / f"{source.case}_z{z:03d}.png",
            source.image[0, z],
            panels,
            classes,
            f"{source.case}, slice {z}",
        )


def fresh_folders(out: Path, methods: tuple[str, ...]) -> None:
    """Empty `predictions/<method>/` and `overlays/` under `out`: a previous run's files (other
    cases, other methods) must not outlive it, and DVC expects every output even when empty."""
    for name in (PREDICTIONS, OVERLAYS):
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)
    for method in methods:
        (out / PREDICTIONS / method).mkdir()


def run(params: Params, adapter: Path, out: Path, unet: Path | None = None) -> list[str]:
    """Write the label maps and overlays of the test cases under `out`; returns the cases.
    `unet`: the folder of the U-Net baseline (`fewsam train baseline`), None for none."""
    ensure_parent(out / PREDICTIONS)  # an unwritable `out` fails before any model is loaded
    reader = open_dataset(params.dataset, params.seed)
    cases = evaluation_cases(reader, params.evaluate.max_cases)
    models = load_models(params, adapter, reader, unet)
    fresh_folders(out, models.methods)
    try:
        for case in track(cases, "infer"):
            source = reader.load(case, resize=False)
            preds = predict_case(models, source, params)
            for method, pred in preds.items():
                path = prediction_path(out / PREDICTIONS, method, case)
                reports.write_nifti(path, pred, source.affine, source.header)
            write_overlays(
                out / OVERLAYS, source, preds, reader.classes, params.evaluate.overlays_per_case
            )
            del source, preds
            if next(models.adapted.parameters()).device.type == "cuda":
                torch.cuda.empty_cache()
    except BaseException:
        # A bad later case (or an interrupt) must not leave the earlier cases' label maps
        # looking like a finished run that `score` would take for the whole test set.
        fresh_folders(out, models.methods)
        raise
    return cases
