"""Seconds per test volume of evaluation on this CPU (random weights: speed does not depend on them).

A volume of the default phantom's size (128 x 128 x 40, 8 classes on 30 slices) goes through
everything `fewsam evaluate infer` and `evaluate score` do per case: the adapted model
prompt-free and prompted (1 point per class), zero-shot SAM, and scoring (transunet protocol). `tiny` runs the whole
volume at input 256. `vit_b` at input 512 times a few slices per mode and extrapolates to a
100-slice Synapse-like volume (said so in the table). `litemedsam` (TinyViT, 256 px only; needs
the optional `fewsam[litemedsam]`) runs the whole volume like tiny.

    .venv/bin/python benchmarks/bench_eval.py [--threads 2] [--archs tiny vit_b litemedsam]
        [--append BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from core.params import LoraParams, ModelParams
from evaluate.inference import gt_prompts, predict_volume
from evaluate.protocols import score_case
from evaluate.zero_shot import zero_shot_volume
from train.base_weights import load_sam
from train.model import build_fewsam

K = 8
LORA = LoraParams(
    rank=4, alpha=4.0, dropout=0.0, encoder=True, decoder=True, finetune="lora", fine_head=False
)


def volume(z: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image 1 x Z x size x size in [0, 1] and a label with K box-shaped organs on 3/4 of slices."""
    rng = np.random.default_rng(0)
    label = np.zeros((z, size, size), np.uint8)
    s = size // 16
    for k in range(1, K + 1):
        r, c = divmod(k - 1, 3)
        label[
            z // 8 : z - z // 8,
            (2 + 4 * r) * s : (5 + 4 * r) * s,
            (2 + 4 * c) * s : (5 + 4 * c) * s,
        ] = k
    image = (label / K + rng.normal(0, 0.05, label.shape)).clip(0, 1).astype(np.float32)[None]
    return image, label


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(arch: str, size: int, z: int, batch: int) -> dict[str, float]:
    """Seconds per mode on a z-slice volume (steady state: the faster of two runs)."""
    torch.manual_seed(0)
    model = build_fewsam(ModelParams(arch, None, size), LORA, K)
    sam = load_sam(arch, None, size)
    image, label = volume(z, 128)
    mid = slice(z // 2, z // 2 + 1)
    predict_volume(model, image[:, mid], 1)  # warm-ups: allocator, kernels
    zero_shot_volume(sam, image[:, mid], label[mid], K, 1)
    prompts = gt_prompts(label, K, 1, seed=0, case="bench")
    preds: dict[str, np.ndarray] = {}

    def run(mode: str) -> None:
        if mode == "prompt_free":
            preds[mode] = predict_volume(model, image, batch)
        elif mode == "prompted":
            preds[mode] = predict_volume(model, image, batch, prompts=prompts)
        else:
            preds[mode] = zero_shot_volume(sam, image, label, K, batch)

    out = {
        mode: seconds(lambda m=mode: run(m)) for mode in ("prompt_free", "prompted", "zero_shot")
    }
    out["scoring"] = seconds(
        lambda: [score_case(p, label, K, (2.5, 0.76, 0.76), "transunet") for p in preds.values()]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vit-b-slices", type=int, default=4)
    parser.add_argument("--append", help="Markdown file to append the section to.")
    parser.add_argument("--archs", nargs="+", default=["tiny", "vit_b"], help="Models to run.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    z_full, z_target = 40, 100
    full = {a: bench(a, 256, z_full, 16) for a in ("tiny", "litemedsam") if a in args.archs}
    for arch, row in full.items():
        print(arch, row)
    vit = bench("vit_b", 512, args.vit_b_slices, args.vit_b_slices) if "vit_b" in args.archs else {}
    print("vit_b", vit)
    scale = z_target / args.vit_b_slices
    lines = [
        "",
        "## Evaluation: seconds per test volume (CPU)",
        "",
        f"`.venv/bin/python benchmarks/bench_eval.py --threads {args.threads}` on "
        f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads; random weights;"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine).",
        f"tiny, litemedsam: a measured {z_full}-slice 128 x 128 volume (the default phantom), "
        "batch 16. vit_b: "
        f"{args.vit_b_slices} slices measured per mode, **extrapolated** linearly to {z_target} "
        "slices; its scoring figure is for the small test volume only. Each figure is the faster of two"
        " runs (steady state; the first volume of a run also pays one-time kernel set-up).",
        "",
        "| model | input | slices | prompt-free s | prompted s | zero-shot s | scoring s "
        "| total s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arch, row in full.items():
        lines.append(
            f"| {arch} | 256 | {z_full} | {row['prompt_free']:.1f} | {row['prompted']:.1f} "
            f"| {row['zero_shot']:.1f} | {row['scoring']:.2f} | {sum(row.values()):.1f} |"
        )
    if vit:
        ext = {k: v * scale for k, v in vit.items() if k != "scoring"}
        lines.append(
            f"| vit_b | 512 | {z_target} (extrapolated) | {ext['prompt_free']:.0f} "
            f"| {ext['prompted']:.0f} | {ext['zero_shot']:.0f} | - | {sum(ext.values()):.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
