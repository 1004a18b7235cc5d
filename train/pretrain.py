"""Pretrain the `tiny` SAM as a promptable segmenter on generated shapes, and ship its weights.

A straight loop in the manner of SAM's training, in miniature: each step draws `batch_size`
generated images (train.pretrain_shapes), embeds them once, and decodes `instances` prompts per
image against that embedding: a point, several points or a jittered box first, then
`corrective_rounds` clicks drawn from the error of the previous mask, which is fed back as the
mask prompt. Loss: focal + Dice on the masks (the best of three for a single point) and the MSE of
the IoU head. AdamW, linear warmup, cosine decay.

Everything random derives from (seed, step) or (seed, image index), so a run interrupted and
resumed from its checkpoint folder ends with the same weights as one that was not.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from segment_anything.modeling import Sam

from synth.atomic import atomic_path, write_json
from synth.errors import InputError
from synth.params import PretrainParams
from synth.progress import make_progress
from train.pretrain_eval import decode, embed, evaluate, upsample
from train.pretrain_loss import sam_loss
from train.pretrain_prompts import corrective_prompts, initial_prompts, pick_instances
from train.pretrain_shapes import sample
from train.sam_registry import build_sam

ARCH = "tiny"
PROMPT_KEY = 73
INIT_KEY = 74
STATE_FILE = "state.pt"
LOG_FILE = "log.csv"
LOG_FIELDS = ("step", "loss", "focal", "dice", "iou_mse", "lr", "seconds")
# Settings that do not change the weights, so a run may resume after they change.
_NOT_IN_STATE = ("minutes", "eval_images", "eval_every", "save_every")


def lr_at(step: int, p: PretrainParams) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine to zero."""
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    progress = (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps)
    return p.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def new_model(seed: int) -> Sam:
    """The `tiny` SAM with its initial weights drawn from `seed`."""
    torch.manual_seed(int(np.random.default_rng([seed, INIT_KEY]).integers(2**31)))
    return build_sam(ARCH)


def make_optimizer(sam: Sam, p: PretrainParams) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on biases, norms, position tables)."""
    decay = [t for n, t in sam.named_parameters() if t.ndim == 2 and "rel_pos" not in n]
    other = [t for n, t in sam.named_parameters() if not (t.ndim == 2 and "rel_pos" not in n)]
    groups = [
        {"params": decay, "weight_decay": p.weight_decay},
        {"params": other, "weight_decay": 0},
    ]
    return torch.optim.AdamW(groups, lr=p.lr)


def train_step(
    sam: Sam, optimizer: torch.optim.Optimizer, seed: int, step: int, p: PretrainParams
) -> dict[str, float]:
    """One optimizer step on the images of step `step`; returns the mean loss parts."""
    rng = np.random.default_rng([seed, PROMPT_KEY, step])
    difficulty = min(1.0, step / p.curriculum_steps) if p.curriculum_steps else 1.0
    batch = [
        sample(seed, step * p.batch_size + i, difficulty=difficulty) for i in range(p.batch_size)
    ]
    embeddings = embed(sam, torch.from_numpy(np.stack([image for image, _ in batch])))
    parts: list[tuple[torch.Tensor, float, float, float]] = []
    for (_, labels), embedding in zip(batch, embeddings, strict=True):
        masks = pick_instances(rng, labels, p.instances, p.min_area)
        if masks.shape[0] == 0:
            continue
        target = torch.from_numpy(masks[:, None].astype(np.float32))
        # Area-averaged to the loss side: boundary pixels get soft targets, small objects survive.
        target = torch.nn.functional.interpolate(target, (p.loss_size, p.loss_size), mode="area")
        prompts = initial_prompts(
            rng, masks, p.box_prob, p.multi_point_prob, p.max_points, p.box_jitter
        )
        mask_input = None
        for round_ in range(p.corrective_rounds + 1):
            if round_:
                predicted = (upsample(mask_input, labels.shape[0]) > 0)[:, 0].numpy()
                prompts = corrective_prompts(rng, prompts, predicted, masks)
            low_res, iou_pred = decode(sam, embedding[None], prompts, mask_input)
            loss = sam_loss(
                upsample(low_res, p.loss_size),
                iou_pred,
                target,
                p.focal_weight,
                p.dice_weight,
                p.iou_weight,
            )
            kept = low_res[torch.arange(low_res.shape[0]), loss.chosen][:, None]
            mask_input = kept.detach()
            parts.append((loss.total, float(loss.focal), float(loss.dice), float(loss.iou_mse)))
    total = torch.stack([t for t, *_ in parts]).mean()
    lr = lr_at(step, p)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if p.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(sam.parameters(), p.grad_clip)
    optimizer.step()
    mean = np.mean([values for _, *values in parts], axis=0)
    return {
        "loss": float(total.detach()),
        "focal": mean[0],
        "dice": mean[1],
        "iou_mse": mean[2],
        "lr": lr,
    }


def settings_key(p: PretrainParams, seed: int) -> str:
    """What a checkpoint must match to be resumed: the seed and the settings that shape weights."""
    items = {k: v for k, v in vars(p).items() if k not in _NOT_IN_STATE}
    return repr(sorted({"seed": seed, **items}.items()))


@dataclass
class LoopState:
    """Where a run stands: steps done, training seconds so far (all sessions)."""

    step: int = 0
    seconds: float = 0.0


def save_state(
    folder: Path, sam: Sam, optimizer: torch.optim.Optimizer, state: LoopState, key: str
) -> None:
    """Checkpoint model, optimizer and loop state to `folder`/state.pt, atomically."""
    blob = {
        "model": sam.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": state.step,
        "seconds": state.seconds,
        "settings": key,
    }
    with atomic_path(folder / STATE_FILE, suffix=".pt") as tmp:
        torch.save(blob, tmp)


def load_state(folder: Path, sam: Sam, optimizer: torch.optim.Optimizer, key: str) -> LoopState:
    """Restore a checkpoint from `folder` if there is one (else a fresh LoopState)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return LoopState()
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("settings") != key:
        raise InputError(
            path, "checkpoint of other pretraining settings; delete the folder to start over"
        )
    sam.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    return LoopState(step=int(blob["step"]), seconds=float(blob["seconds"]))


def _log(folder: Path, rows: list[dict[str, float]], after: int) -> None:
    """Append `rows` to the CSV log, dropping rows past `after` left by an interrupted run."""
    path = folder / LOG_FILE
    kept: list[dict[str, str]] = []
    if path.is_file():
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) <= after]
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(kept)
        writer.writerows(
            {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows
        )


def train(
    sam: Sam,
    p: PretrainParams,
    seed: int,
    folder: Path,
    budget_s: float = 0.0,
    stop_at: int | None = None,
    report: bool = True,
) -> LoopState:
    """Train `sam` (fresh from `new_model`) to `p.steps`, resuming from `folder` when it can.

    Stops early after `budget_s` seconds of training in all sessions (0 = no limit) or at step
    `stop_at`, checkpointing first. Returns the final LoopState. Prints a line per 100 steps
    and each evaluation when `report` (and shows a progress bar on a terminal).
    """
    torch.set_num_threads(p.threads)
    optimizer = make_optimizer(sam, p)
    key = settings_key(p, seed)
    state = load_state(folder, sam, optimizer, key)
    last = stop_at if stop_at is not None else p.steps
    rows: list[dict[str, float]] = []
    sam.train()
    with make_progress() as progress:
        task = progress.add_task("pretrain tiny", total=p.steps, completed=state.step)
        while state.step < last and not (budget_s and state.seconds >= budget_s):
            start = time.perf_counter()
            parts = train_step(sam, optimizer, seed, state.step, p)
            state.step += 1
            rows.append(
                {
                    "step": state.step,
                    **parts,
                    "seconds": state.seconds + time.perf_counter() - start,
                }
            )
            progress.update(task, advance=1, description=f"pretrain tiny loss {parts['loss']:.3f}")
            if report and state.step % 100 == 0:
                recent = np.mean([r["loss"] for r in rows[-100:]])
                print(
                    f"step {state.step} loss {recent:.4f} lr {parts['lr']:.2e} {state.seconds:.0f} s",
                    flush=True,
                )
            if p.eval_every and state.step % p.eval_every == 0 and state.step < p.steps and report:
                print(
                    f"step {state.step} eval {evaluate(sam, seed, p.eval_images, p.min_area)}",
                    flush=True,
                )
            if state.step % p.save_every == 0 or state.step == last:
                save_state(folder, sam, optimizer, state, key)
                _log(folder, rows, state.step - len(rows))
                rows = []
            state.seconds += time.perf_counter() - start
    save_state(folder, sam, optimizer, state, key)
    _log(folder, rows, state.step - len(rows))
    return state


def export(sam: Sam, out: Path) -> None:
    """Write the weights as fp16 safetensors under `Sam.state_dict()` names, atomically."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in sam.state_dict().items()}
    with atomic_path(out, suffix=".safetensors") as tmp:
        save_file(
            tensors,
            str(tmp),
            metadata={"arch": ARCH, "input_size": str(sam.image_encoder.img_size)},
        )


def run(
    p: PretrainParams,
    seed: int,
    out: Path,
    folder: Path,
    command: str,
    minutes: float | None = None,
) -> dict[str, object]:
    """Pretrain (or resume), evaluate on held-out images, write `out` and its JSON card beside it.

    `minutes` overrides `p.minutes`. Returns the card: command, seed, steps done and planned,
    training seconds, held-out mIoUs, settings.
    """
    budget = p.minutes if minutes is None else minutes
    sam = new_model(seed)
    state = train(sam, p, seed, folder, budget_s=budget * 60.0)
    sam = sam.float()
    start = time.perf_counter()
    scores = evaluate(sam, seed, p.eval_images, p.min_area)
    # Score what ships: the fp16 weights read back, not the fp32 ones in memory.
    export(sam, out)
    shipped = new_model(seed)
    shipped.load_state_dict({k: v.float() for k, v in load_file(str(out)).items()})
    scores_fp16 = evaluate(shipped, seed, p.eval_images, p.min_area)
    card = {
        "command": command,
        "arch": ARCH,
        "input_size": sam.image_encoder.img_size,
        "seed": seed,
        "steps": state.step,
        "planned_steps": p.steps,
        "complete": state.step == p.steps,
        "train_seconds": round(state.seconds, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "threads": p.threads,
        "torch": torch.__version__,
        "held_out": {
            **scores_fp16,
            "images": p.eval_images,
            "fp32_miou_point_best": scores["miou_point_best"],
        },
        "pretrain": vars(p),
        "bytes": out.stat().st_size,
    }
    write_json(out.with_suffix(".json"), card)
    return card
