"""The training loop, kept straight: build, maybe resume, step, checkpoint, save the adapter.

One optimizer step per batch. Only the LoRA factors and the decoder heads are trainable (the
model decides which); the optimizer, the checkpoints and the adapter see nothing else. Rank 0
alone writes files; every rank computes the same weights (DistributedDataParallel averages the
gradients, and the end of the run checks that the ranks agree).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import TextColumn
from torch.nn.parallel import DistributedDataParallel

from core import streams
from core.atomic import ensure_parent
from core.errors import InputError
from core.params import Params, to_dict
from core.progress import make_progress
from train.adapter_io import save_adapter
from train.base_weights import sha256_file
from train.context import Context
from train.data import StepBatchSampler, SyntheticSlices, make_loader, prompt_free
from train.loss import segmentation_loss
from train.model import FewSam, build_fewsam, trainable_state_dict
from train.resume import clear_state, load_state, resume_dir_for, run_hash, save_state, write_log
from train.schedule import lr_at, make_optimizer

LOG_FLUSH_SECONDS = 30.0


def step_seed(seed: int, rank: int, step: int) -> int:
    """Torch seed of one step on one rank: resuming at any step replays the same draws."""
    return int(
        np.random.SeedSequence(
            [seed, streams.TRAIN, streams.TRAIN_TORCH, rank, step]
        ).generate_state(1)[0]
    )


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    # bf16 needs no loss scaling; on CPU and MPS the loop stays in float32.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _state_checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state_dict(model).items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _check_ranks_agree(model: torch.nn.Module, ctx: Context) -> None:
    checksums: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(checksums, _state_checksum(model))
    if len(set(checksums)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {checksums}")


def _restore(
    folder: Path, hash_: str, model: FewSam, optimizer: torch.optim.Optimizer, quiet: bool
) -> tuple[int, list[dict[str, float]]]:
    """Load a matching resume state into `model` and `optimizer`: (next step, log rows so far)."""
    state = load_state(folder, hash_, quiet=quiet)
    if state is None:
        return 0, []
    if set(state["model"]) != set(trainable_state_dict(model)):
        # Same params, but code that names its tensors differently: not this run's state.
        if not quiet:
            print(f"note: {folder} holds other tensors; starting over", file=sys.stderr)
        return 0, []
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), state["log"]


def adapter_config(params: Params, dataset: SyntheticSlices, hash_: str) -> dict[str, Any]:
    """What evaluation needs to rebuild the model and preprocess slices as training did."""
    info = dataset.info
    return {
        "classes": list(info.classes),
        "channels": list(info.channels),
        "dataset": info.params.get("dataset"),
        "params_hash": hash_,
        "seed": params.seed,
        "model": to_dict(params.model),
        "lora": to_dict(params.lora),
        "train": to_dict(params.train),
        "loss": to_dict(params.loss),
    }


def train(
    params: Params,
    data: Path,
    out: Path,
    log: Path,
    ctx: Context,
    stop_after: int | None = None,
) -> FewSam:
    """Train on `data` and save the adapter to `out` (see `train.run.run`)."""
    tp = params.train
    if ctx.is_main:  # unwritable outputs fail now, not when the trained adapter is saved
        for path in (out, log):
            ensure_parent(path)
        if out.exists() and not out.is_dir():
            raise InputError(out, "is a file; the adapter is written as a folder")
    dataset = SyntheticSlices(data, params.model.input_size, tp.points_per_class, params.seed)
    checkpoint = params.model.checkpoint
    hash_ = run_hash(params, sha256_file(data), sha256_file(checkpoint) if checkpoint else None)

    torch.manual_seed(params.seed)  # LoRA initialization (a random base has its own seed)
    model = build_fewsam(params.model, params.lora, dataset.num_classes).to(ctx.device)
    optimizer = make_optimizer(model.named_parameters(), tp)
    trainable = [p for p in model.parameters() if p.requires_grad]

    resume_dir = resume_dir_for(out)
    start, rows = 0, []
    if tp.resume == "auto":
        start, rows = _restore(resume_dir, hash_, model, optimizer, quiet=not ctx.is_main)

    net: torch.nn.Module = model
    if ctx.distributed:
        # Prompt-free steps leave the class embeddings unused, hence find_unused_parameters.
        cuda = ctx.device.type == "cuda"
        net = DistributedDataParallel(
            model, device_ids=[ctx.device] if cuda else None, find_unused_parameters=True
        )
    if tp.compile:
        net = torch.compile(net)

    end = tp.max_steps if stop_after is None else max(start, min(tp.max_steps, stop_after))
    sampler = StepBatchSampler(
        len(dataset), tp.batch_size, params.seed, start, end, ctx.rank, ctx.world_size
    )
    loader = make_loader(dataset, sampler, tp.num_workers, ctx.device.type == "cuda")
    model.train()

    progress = make_progress(
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.2f} it/s")
    )
    progress.disable = progress.disable or not ctx.is_main
    with progress:
        task = progress.add_task("train", total=tp.max_steps, completed=start, loss=0.0, speed=0.0)
        last = last_flush = time.perf_counter()
        next_step = start
        for step, batch in enumerate(loader, start=start):
            lr = lr_at(step, tp)
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(step_seed(params.seed, ctx.rank, step))
            batch = batch.to(ctx.device)
            # Images without any labeled class get only padding points, which the decoder
            # treats as prompt-free; the dropout decision itself is shared by all ranks.
            no_prompt = prompt_free(params.seed, step, tp.prompt_dropout)
            with _autocast(ctx.device):
                logits = net(
                    batch.images,
                    None if no_prompt else batch.points,
                    None if no_prompt else batch.point_labels,
                )
            parts = segmentation_loss(logits, batch.labels, params.loss)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            if tp.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, tp.grad_clip)
            optimizer.step()

            values = torch.stack([parts.total.detach(), parts.ce, parts.dice])
            if ctx.distributed:
                dist.all_reduce(values)  # SUM: gloo has no AVG
                values /= ctx.world_size
            loss, ce, dice = values.tolist()
            now = time.perf_counter()
            rows.append(dict(step=step, loss=loss, ce=ce, dice=dice, lr=lr, seconds=now - last))
            progress.update(task, advance=1, loss=loss, speed=1.0 / max(now - last, 1e-9))
            last = now

            next_step = step + 1
            if ctx.is_main and next_step < tp.max_steps:
                if next_step % tp.save_every == 0:
                    save_state(
                        resume_dir,
                        step=next_step,
                        hash_=hash_,
                        model_state=trainable_state_dict(model),
                        optimizer_state=optimizer.state_dict(),
                        rows=rows,
                    )
                    last_flush = now
                elif now - last_flush > LOG_FLUSH_SECONDS:
                    write_log(resume_dir / "train_log.csv", rows)
                    last_flush = now
    dataset.close()

    if ctx.distributed:
        _check_ranks_agree(model, ctx)
    if next_step == tp.max_steps and ctx.is_main:
        save_adapter(model, out, adapter_config(params, dataset, hash_))
        write_log(log, rows)
        clear_state(resume_dir)
    return model
