"""The U-Net baseline's Dice against its training budget, in one run (CPU or GPU).

Trains the U-Net of `params.yaml` (`baseline:`) on a synthetic set for the largest of `--steps`
and, after each step count in `--steps`, scores it prompt-free on the test cases the pipeline
evaluates (`evaluate.max_cases`; `transunet` or the params' protocol): mean Dice and HD95 over
the classes, with the seconds trained so far (training steps only, scoring excluded). The
schedule is the one of the largest budget, so an intermediate point is a model caught mid-decay,
not one trained with that budget's own schedule: the figure says how fast the U-Net gets there,
and the last point is the trained model itself.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_baseline.py --data data/synthetic.h5 \\
        --steps 150 300 600 1200 2400 [--params params.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from baseline.loop import train_unet
from baseline.network import predict_unet
from core.params import Params, load_params
from core.schema import read_synthetic_info
from evaluate.layout import evaluation_cases
from evaluate.postprocess import postprocess
from evaluate.protocols import score_case, summarize
from synth.datasets import open_dataset
from synth.datasets.base import resize_volume


def unet_scorer(params: Params) -> tuple[Callable[[torch.nn.Module], tuple[float, float]], int]:
    """A function giving a U-Net's prompt-free mean Dice and HD95 over the classes on the test
    cases the pipeline evaluates with `params` (read once, here; label maps post-processed as
    `evaluate.postprocess` says), and how many cases those are."""
    reader = open_dataset(params.dataset, params.seed)
    cases = [
        reader.load(c, resize=False) for c in evaluation_cases(reader, params.evaluate.max_cases)
    ]
    k = len(reader.classes)

    def score(net: torch.nn.Module) -> tuple[float, float]:
        net.eval()
        scores = []
        for source in cases:
            view = resize_volume(source, params.dataset.slice_size)
            out_hw = (int(source.image.shape[2]), int(source.image.shape[3]))
            pred = predict_unet(net, view.image, params.evaluate.batch_size, out_hw=out_hw)
            pred = postprocess(pred, k, params.evaluate.postprocess)  # as `evaluate infer`
            scores.append(
                score_case(pred, source.label, k, source.spacing, params.evaluate.protocol)
            )
        s = summarize(scores, k)
        return float(s.dice or 0.0), float(s.hd95 or float("nan"))

    return score, len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic.h5"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, nargs="+", default=[150, 300, 600, 1200, 2400])
    args = parser.parse_args()
    params = load_params(args.params)
    budgets = sorted(set(args.steps))
    bp = dataclasses.replace(params.baseline, max_steps=budgets[-1])
    params = dataclasses.replace(params, baseline=bp)
    score, n_cases = unet_scorer(params)

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {args.data}, "
        f"{n_cases} test cases, features {list(bp.features)}, batch {bp.batch_size}"
    )
    print("| steps | seconds trained | DSC | HD95 |")
    print("|---:|---:|---:|---:|")

    def on_step(done: int, net: torch.nn.Module, seconds: float) -> None:
        if done in budgets:
            t = time.perf_counter()
            dice, hd95 = score(net)
            print(
                f"| {done} | {seconds:.0f} | {dice:.3f} | {hd95:.2f} |  "
                f"<!-- scored in {time.perf_counter() - t:.0f} s -->",
                flush=True,
            )

    train_unet(params, read_synthetic_info(args.data), on_step)


if __name__ == "__main__":
    main()
