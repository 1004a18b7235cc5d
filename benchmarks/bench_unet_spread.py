"""The U-Net baseline's spread over initializations with its data held fixed, and what narrows it.

For each replicate (a replicate changes the U-Net's initialization and batch order, not the
synthetic set given by --data), trains the U-Net of `params.yaml` once and scores prompt-free,
on the test cases the pipeline evaluates, three sets of weights of that one run: the final ones,
an exponential moving average of the weights (decay 0.98 per step) and the uniform average over
the last 30% of the steps (as stochastic weight averaging). `--norm batch` swaps BasicUNet's
instance norm for batch norm (`baseline.norm`). No extra training steps: the averages cost one copy of the weights.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_unet_spread.py --data data/synthetic.h5 \\
        --replicates 0 1 2 3 4 [--norm instance|batch] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import baseline.loop as loop
from core.params import load_params
from core.schema import read_synthetic_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_baseline import unet_scorer  # noqa: E402

EMA_DECAY = 0.98
TAIL = 0.3


class Averages:
    """The EMA and the last-30% average of a run's weights, updated after each step."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.weights: dict[str, dict[str, torch.Tensor]] = {}
        self.tail_steps = 0

    def on_step(self, done: int, net: torch.nn.Module, _seconds: float) -> None:
        now = {n: v.detach().clone() for n, v in net.state_dict().items()}
        floats = [n for n, v in now.items() if v.dtype.is_floating_point]
        if "ema" not in self.weights:
            self.weights["ema"] = now
        else:
            for n in floats:
                self.weights["ema"][n].mul_(EMA_DECAY).add_(now[n], alpha=1 - EMA_DECAY)
        if done <= int((1 - TAIL) * self.steps):
            return
        self.tail_steps += 1
        if "tail" not in self.weights:
            self.weights["tail"] = {n: v.clone() for n, v in now.items()}
            return
        for n in floats:
            delta = now[n] - self.weights["tail"][n]
            self.weights["tail"][n].add_(delta, alpha=1 / self.tail_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic.h5"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--replicates", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--norm", choices=["instance", "batch"], default="instance")
    args = parser.parse_args()
    base = load_params(args.params)
    base = dataclasses.replace(base, baseline=dataclasses.replace(base.baseline, norm=args.norm))
    score_both, n_cases = unet_scorer(base)
    info = read_synthetic_info(args.data)
    steps = base.baseline.max_steps

    def score(net: torch.nn.Module) -> float:
        return score_both(net)[0]

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {args.data}, {n_cases} test "
        f"cases, {steps} steps, {args.norm} norm"
    )
    print("| replicate | final | EMA | last-30% average | seconds |")
    print("|---:|---:|---:|---:|---:|")
    results: dict[str, list[float]] = {"final": [], "ema": [], "tail": []}
    for r in args.replicates:
        params = dataclasses.replace(base, replicate=r)
        averages = Averages(steps)
        start = time.perf_counter()
        net, _ = loop.train_unet(params, info, averages.on_step)
        row = {"final": score(net)}
        for name in ("ema", "tail"):
            averaged = copy.deepcopy(net)
            averaged.load_state_dict(averages.weights[name])
            row[name] = score(averaged)
        for name, value in row.items():
            results[name].append(value)
        print(
            f"| {r} | {row['final']:.3f} | {row['ema']:.3f} | {row['tail']:.3f} | "
            f"{time.perf_counter() - start:.0f} |",
            flush=True,
        )
    if len(args.replicates) > 1:
        cells = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" for v in results.values()]
        print(f"| mean ± sd | {' | '.join(cells)} | |")


if __name__ == "__main__":
    main()
