"""The training loop, kept straight: set up (build, maybe resume), step, finish (save the adapter).

One optimizer step per batch. Only the LoRA factors and the decoder heads are trainable (the
model decides which); the optimizer, the checkpoints and the adapter see nothing else. Rank 0
alone writes files; every rank computes the same weights (DistributedDataParallel averages the
gradients, and the end of the run checks that the ranks agree). When to checkpoint is
`train.resume.Checkpointer`'s business.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import Progress, TextColumn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from core import streams
from core.atomic import ensure_parent
from core.errors import InputError
from core.params import Params, to_dict
from core.progress import make_progress
from train.adapter_io import save_adapter
from train.base_weights import sha256_file
from train.context import Context
from train.data import (
    Batch,
    StepBatchSampler,
    SyntheticSlices,
    TrainSample,
    make_loader,
    prompt_free,
)
from train.loss import segmentation_loss
from train.model import FewSam, build_fewsam, trainable_state_dict
from train.resume import Checkpointer, clear_state, restore, resume_dir_for, run_hash, write_log
from train.schedule import lr_at, make_optimizer


@dataclass
class _Run:
    """Everything a run's steps share, as `_setup` leaves it."""

    model: FewSam
    net: torch.nn.Module  # what a step calls: the model, maybe wrapped by DDP and compiled
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    dataset: SyntheticSlices
    loader: DataLoader[TrainSample]  # yields one `Batch` per step
    start: int  # the first step of this session (> 0 after resuming)
    rows: list[dict[str, float]]  # the log, one row per step, from step 0
    hash_: str
    resume_dir: Path


def train(
    params: Params,
    data: Path,
    out: Path,
    log: Path,
    ctx: Context,
    stop_after: int | None = None,
) -> FewSam:
    """Train on `data` and save the adapter to `out` (see `train.run.run`)."""
    run = _setup(params, data, out, log, ctx, stop_after)
    tp = params.train
    done = run.start  # steps done so far
    with _progress(ctx) as progress:
        task = progress.add_task("train", total=tp.max_steps, completed=done, loss=0.0, speed=0.0)
        last = time.perf_counter()
        checkpointer = Checkpointer(
            run.resume_dir, run.hash_, tp.save_every, tp.max_steps, ctx.is_main, now=last
        )
        for step, batch in enumerate(run.loader, start=run.start):
            parts = _step(run, batch, step, params, ctx)
            now = time.perf_counter()
            run.rows.append({"step": step, **parts, "seconds": now - last})
            progress.update(task, advance=1, loss=parts["loss"], speed=1.0 / max(now - last, 1e-9))
            last = now
            done = step + 1
            checkpointer.after_step(done, now, run.model, run.optimizer, run.rows)
    run.dataset.close()
    _finish(run, done, params, out, log, ctx)
    return run.model


def _setup(
    params: Params, data: Path, out: Path, log: Path, ctx: Context, stop_after: int | None
) -> _Run:
    """Build the model, optimizer and loader, resuming from a matching state when asked."""
    tp = params.train
    if ctx.is_main:  # unwritable outputs fail now, not when the trained adapter is saved
        _check_outputs(out, log)
    dataset = SyntheticSlices(
        data, params.model.input_size, tp.points_per_class, params.stream_seed
    )
    checkpoint = params.model.checkpoint
    hash_ = run_hash(params, sha256_file(data), sha256_file(checkpoint) if checkpoint else None)

    torch.manual_seed(params.stream_seed)  # LoRA initialization (a random base has its own seed)
    model = build_fewsam(params.model, params.lora, dataset.num_classes).to(ctx.device)
    optimizer = make_optimizer(model.named_parameters(), tp)
    trainable = [p for p in model.parameters() if p.requires_grad]

    resume_dir = resume_dir_for(out)
    start, rows = 0, []
    if tp.resume == "auto":
        start, rows = restore(resume_dir, hash_, model, optimizer, quiet=not ctx.is_main)
    net = _wrap(model, ctx, tp.compile)

    end = tp.max_steps if stop_after is None else max(start, min(tp.max_steps, stop_after))
    sampler = StepBatchSampler(
        len(dataset), tp.batch_size, params.stream_seed, start, end, ctx.rank, ctx.world_size
    )
    loader = make_loader(dataset, sampler, tp.num_workers, ctx.device.type == "cuda")
    model.train()
    return _Run(model, net, optimizer, trainable, dataset, loader, start, rows, hash_, resume_dir)


def _step(run: _Run, batch: Batch, step: int, params: Params, ctx: Context) -> dict[str, float]:
    """One optimizer step; returns its loss, cross-entropy and Dice (mean over ranks) and lr."""
    tp = params.train
    lr = lr_at(step, tp)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(step_seed(params.stream_seed, ctx.rank, step))
    batch = batch.to(ctx.device)
    # Images without any labeled class get only padding points, which the decoder
    # treats as prompt-free; the dropout decision itself is shared by all ranks.
    no_prompt = prompt_free(params.stream_seed, step, tp.prompt_dropout)
    with _autocast(ctx.device):
        logits = run.net(
            batch.images,
            None if no_prompt else batch.points,
            None if no_prompt else batch.point_labels,
        )
    parts = segmentation_loss(logits, batch.labels, params.loss)
    run.optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    if tp.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.trainable, tp.grad_clip)
    run.optimizer.step()

    values = torch.stack([parts.total.detach(), parts.ce, parts.dice])
    if ctx.distributed:
        dist.all_reduce(values)  # SUM: gloo has no AVG
        values /= ctx.world_size
    loss, ce, dice = values.tolist()
    return {"loss": loss, "ce": ce, "dice": dice, "lr": lr}


def _finish(run: _Run, done: int, params: Params, out: Path, log: Path, ctx: Context) -> None:
    """Check the ranks agree; after the last step, save the adapter and log, drop the state."""
    if ctx.distributed:
        _check_ranks_agree(run.model, ctx)
    if done == params.train.max_steps and ctx.is_main:
        save_adapter(run.model, out, adapter_config(params, run.dataset, run.hash_))
        write_log(log, run.rows)
        clear_state(run.resume_dir)


def step_seed(seed: int, rank: int, step: int) -> int:
    """Torch seed of one step on one rank: resuming at any step replays the same draws."""
    return int(
        np.random.SeedSequence(
            [seed, streams.TRAIN, streams.TRAIN_TORCH, rank, step]
        ).generate_state(1)[0]
    )


def _check_outputs(out: Path, log: Path) -> None:
    for path in (out, log):
        ensure_parent(path)
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file; the adapter is written as a folder")


def _wrap(model: FewSam, ctx: Context, compile_: bool) -> torch.nn.Module:
    """The module a step calls: DDP across processes, compiled when asked."""
    net: torch.nn.Module = model
    if ctx.distributed:
        # Prompt-free steps leave the class embeddings unused, hence find_unused_parameters.
        cuda = ctx.device.type == "cuda"
        net = DistributedDataParallel(
            model, device_ids=[ctx.device] if cuda else None, find_unused_parameters=True
        )
    if compile_:
        net = torch.compile(net)
    return net


def _progress(ctx: Context) -> Progress:
    progress = make_progress(
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.2f} it/s")
    )
    progress.disable = progress.disable or not ctx.is_main
    return progress


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # bf16 needs no loss scaling; on CPU and MPS the loop stays in float32.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def adapter_config(params: Params, dataset: SyntheticSlices, hash_: str) -> dict[str, Any]:
    """What evaluation needs to rebuild the model and preprocess slices as training did."""
    info = dataset.info
    return {
        "classes": list(info.classes),
        "channels": list(info.channels),
        "dataset": info.params.get("dataset"),
        "params_hash": hash_,
        "seed": params.seed,
        "replicate": params.replicate,
        "model": to_dict(params.model),
        "lora": to_dict(params.lora),
        "train": to_dict(params.train),
        "loss": to_dict(params.loss),
    }


def _check_ranks_agree(model: torch.nn.Module, ctx: Context) -> None:
    checksums: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(checksums, _state_checksum(model))
    if len(set(checksums)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {checksums}")


def _state_checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state_dict(model).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()
