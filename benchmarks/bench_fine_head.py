"""Training-step time of the default model with and without `lora.fine_head` (CPU).

One step = forward with one point per class, cross-entropy, backward, AdamW step, on a batch of
`train.batch_size` random images at `model.input_size` with the classes of the phantom Synapse
set; the base is params.yaml's (the embedded tiny SAM). The two models alternate, twice each, so
a drift of the machine's speed shows as a difference between the repeats.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_fine_head.py [--steps 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import torch
import torch.nn.functional as F

from core.params import load_params
from train.model import build_fewsam

CLASSES = 8


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor,
    points: torch.Tensor,
    point_labels: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    opt.zero_grad()
    F.cross_entropy(model(images, points, point_labels), labels).backward()
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps after one warm-up step")
    args = parser.parse_args()
    params = load_params("params.yaml")
    size, batch = params.model.input_size, params.train.batch_size
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=gen)
    labels = torch.randint(0, CLASSES + 1, (batch, size, size), generator=gen)
    points = torch.rand(batch, CLASSES, 2, generator=gen) * size
    point_labels = torch.arange(1, CLASSES + 1).repeat(batch, 1)
    print(
        f"{platform.machine()}, {torch.get_num_threads()} threads; "
        f"batch {batch} at {size} px, {CLASSES} classes"
    )
    for head in (False, True, False, True):
        torch.manual_seed(0)
        lora = dataclasses.replace(params.lora, fine_head=head)
        model = build_fewsam(params.model, lora, CLASSES).train()
        trained = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trained, lr=1e-3)
        batch_args = (images, points, point_labels, labels)
        train_step(model, opt, *batch_args)  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            train_step(model, opt, *batch_args)
        seconds = (time.perf_counter() - start) / args.steps
        count = sum(p.numel() for p in trained)
        print(f"fine_head {head!s:5}: {seconds:.3f} s per step, {count:,} trained parameters")


if __name__ == "__main__":
    main()
