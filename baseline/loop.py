"""Stage `baseline`: train the U-Net on the synthetic set, as the adapter is trained.

Same data (`data/synthetic.h5`, slices at their stored size), same batch order (the adapter's
seeded sample stream, `train.data.StepBatchSampler`), same loss (`loss:`), same schedule shape
(AdamW, linear warmup, polynomial decay: `train.schedule`); its own step count, batch size and
learning rate (`baseline:`). The initialization comes from rng([stream seed, BASELINE]), so a
replicate changes it as it changes the adapter's. No resume: at the default budget the run takes
about as long as synthesis, and a rerun gives the same weights.

Writes the model folder (`baseline.io`) and a per-step log with the adapter log's columns
(`train.resume.LOG_FIELDS`); `seconds` per step are what `fewsam report` sums as the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from baseline.io import save_unet
from baseline.network import build_unet, unet_logits
from core import streams
from core.atomic import ensure_parent
from core.device import pick_device
from core.errors import InputError
from core.params import Params, to_dict
from core.progress import make_progress
from core.schema import SyntheticInfo, read_synthetic_info
from train.data import StepBatchSampler
from train.loss import segmentation_loss
from train.resume import write_log
from train.schedule import lr_at, make_optimizer


def read_batch(
    f: h5py.File, indices: list[int], info: SyntheticInfo
) -> tuple[torch.Tensor, torch.Tensor]:
    """B x C x H x W float32 images in [0, 1] and B x H x W int64 labels of `indices` (in order,
    repeats allowed)."""
    # One read per sample: h5py's list selection of the same chunks took ten times as long
    # (14 ms against 1.5 ms for a batch of 8 of the default set, whose step takes about 170 ms).
    image_set, label_set = f["image"], f["label"]
    images = np.stack([image_set[i] for i in indices]).astype(np.float32)
    labels = np.stack([label_set[i] for i in indices])
    if int(labels.max(initial=0)) > len(info.classes):
        raise InputError(info.path, f"samples {indices} hold label ids above the classes")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def init_seed(stream_seed: int) -> int:
    """Torch seed of the network's initialization."""
    return int(np.random.SeedSequence([stream_seed, streams.BASELINE]).generate_state(1)[0])


def unet_config(params: Params, info: SyntheticInfo) -> dict[str, Any]:
    """What evaluation needs to rebuild the network and check it fits the data."""
    return {
        "features": list(params.baseline.features),
        "classes": list(info.classes),
        "channels": list(info.channels),
        "dataset": info.params.get("dataset"),
        "seed": params.seed,
        "replicate": params.replicate,
        "baseline": to_dict(params.baseline),
        "loss": to_dict(params.loss),
    }


# Called after each step with (steps done, the network in train mode, seconds trained so far).
StepHook = Callable[[int, torch.nn.Module, float], None]


def train_unet(
    params: Params, info: SyntheticInfo, on_step: StepHook | None = None
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train a U-Net on the synthetic set `info` describes; returns it (eval mode) and its log
    rows. `on_step` lets a benchmark score the network at several budgets of one run."""
    bp = params.baseline
    if info.length == 0:
        raise InputError(info.path, "the synthetic set is empty")
    device = pick_device(params.train.device)
    torch.manual_seed(init_seed(params.stream_seed))
    net = build_unet(bp.features, len(info.channels), len(info.classes), bp.norm).to(device)
    optimizer = make_optimizer(net.named_parameters(), bp)
    sampler = StepBatchSampler(info.length, bp.batch_size, params.stream_seed, 0, bp.max_steps)
    rows: list[dict[str, float]] = []
    trained = 0.0
    net.train()
    with h5py.File(info.path, "r") as f, make_progress() as progress:
        task = progress.add_task("baseline", total=bp.max_steps)
        for step, keys in enumerate(sampler):
            start = time.perf_counter()
            lr = lr_at(step, bp)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, labels = read_batch(f, [index for _, index in keys], info)
            logits = unet_logits(net, images.to(device))
            parts = segmentation_loss(logits, labels.to(device), params.loss)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            if bp.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), bp.grad_clip)
            optimizer.step()
            loss, ce, dice = (float(v) for v in (parts.total.detach(), parts.ce, parts.dice))
            seconds = time.perf_counter() - start
            trained += seconds
            rows.append(
                {"step": step, "loss": loss, "ce": ce, "dice": dice, "lr": lr, "seconds": seconds}
            )
            progress.advance(task)
            if on_step is not None:
                on_step(step + 1, net, trained)
                net.train()
    return net.eval(), rows


def run(params: Params, data: Path, out: Path, log: Path) -> torch.nn.Module | None:
    """Train on `data` and write the model folder `out` and the CSV `log`; returns the network
    (None when `baseline.enabled` is false: `out` is then a stub and `log` has no rows)."""
    for path in (out, log):
        ensure_parent(path)  # unwritable outputs fail now, not after training
    info = read_synthetic_info(data)
    config = unet_config(params, info)
    if not params.baseline.enabled:
        save_unet(out, None, config)
        write_log(log, [])
        return None
    net, rows = train_unet(params, info)
    save_unet(out, net, config)
    write_log(log, rows)
    return net
