"""The U-Net's spread over initializations, data fixed: one network against an ensemble of K
networks sharing the same steps (K x steps/K), and instance against batch norm.

For each replicate r (which changes the U-Net's initialization and batch order, not the synthetic
set given by --data), trains K members with `baseline.max_steps // K` steps each (member m with
replicate 100 r + m, so no two members of any replicate share a seed) and scores, prompt-free on
the test cases the pipeline evaluates and post-processed as the params say, the ensemble (the
mean of the members' softmax probabilities). K = 1 is the pipeline's U-Net. The training seconds
are summed over the members, so every configuration gets about the same minutes.

`--vary init` keeps every replicate on replicate 0's batch order (only the initialization
changes), `--vary order` on replicate 0's initialization (only the batch order changes); the
default `both` changes both, as a replicate of the pipeline does.

`--steps N` replaces `baseline.max_steps` (the total over the members); `--sgd` trains with
nnU-Net's optimizer instead of AdamW (SGD, Nesterov momentum 0.99, weight decay 3e-5, the same
learning rate and schedule).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_unet_ensemble.py --data data/synthetic.h5 \\
        --replicates 0 1 2 3 --configs instance:1 instance:2 batch:1 [--steps N] [--sgd] \\
        [--params params.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

import baseline.loop as loop
from core import streams
from core.params import load_params
from core.schema import read_synthetic_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_baseline import unet_scorer  # noqa: E402


class SoftmaxEnsemble(torch.nn.Module):
    """Log of the members' mean softmax: its argmax is the ensemble's label, as any logits'."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(dim=1) for m in self.members]).mean(dim=0)
        return probs.clamp_min(1e-12).log()


def nnunet_sgd(named_params: Iterable[tuple[str, torch.nn.Parameter]], bp: Any) -> Any:
    """nnU-Net's optimizer: SGD with Nesterov momentum 0.99 and weight decay 3e-5 on all."""
    trainable = [p for _, p in named_params if p.requires_grad]
    return torch.optim.SGD(trainable, lr=bp.lr, momentum=0.99, nesterov=True, weight_decay=3e-5)


def hold_replicate_0(vary: str, seed: int) -> None:
    """Make the U-Net's training take what `vary` does not name from replicate 0's stream."""
    fixed = streams.stream_seed(seed, 0)
    if vary == "order":  # every replicate starts from replicate 0's weights
        init_seed = loop.init_seed
        loop.init_seed = lambda _stream_seed: init_seed(fixed)  # type: ignore[assignment]
    elif vary == "init":  # every replicate sees replicate 0's batches
        sampler = loop.StepBatchSampler
        loop.StepBatchSampler = (  # type: ignore[assignment,misc]
            lambda length, batch, _stream_seed, *rest: sampler(length, batch, fixed, *rest)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic.h5"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--replicates", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--configs", nargs="+", default=["instance:1", "instance:2", "batch:1"])
    parser.add_argument("--steps", type=int, help="total steps (default: baseline.max_steps)")
    parser.add_argument("--sgd", action="store_true", help="nnU-Net's SGD instead of AdamW")
    parser.add_argument("--vary", choices=("both", "init", "order"), default="both")
    args = parser.parse_args()
    base = load_params(args.params)
    if args.steps:
        base = dataclasses.replace(
            base, baseline=dataclasses.replace(base.baseline, max_steps=args.steps)
        )
    if args.sgd:
        loop.make_optimizer = nnunet_sgd  # type: ignore[assignment]
    hold_replicate_0(args.vary, base.seed)
    score_both, n_cases = unet_scorer(base)
    info = read_synthetic_info(args.data)
    steps = base.baseline.max_steps
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {args.data}, {n_cases} test "
        f"cases, {steps} steps in all per configuration, postprocess {base.evaluate.postprocess}, "
        f"{'SGD' if args.sgd else 'AdamW'}, varying {args.vary}"
    )
    print("| configuration | replicate | DSC | HD95 | seconds trained |")
    print("|---|---:|---:|---:|---:|")
    results: dict[str, list[float]] = {}
    for config in args.configs:
        norm, k = config.split(":")
        members_n = int(k)
        bp = dataclasses.replace(base.baseline, norm=norm, max_steps=steps // members_n)
        for r in args.replicates:
            members, seconds = [], 0.0
            for m in range(members_n):
                # K = 1 keeps replicate r: the pipeline's own run.
                replicate = r if members_n == 1 else 100 * r + m
                params = dataclasses.replace(base, baseline=bp, replicate=replicate)
                start = time.perf_counter()
                net, _ = loop.train_unet(params, info)
                seconds += time.perf_counter() - start
                members.append(net)
            model = members[0] if members_n == 1 else SoftmaxEnsemble(members).eval()
            dsc, hd95 = score_both(model)
            results.setdefault(config, []).append(dsc)
            print(f"| {config} | {r} | {dsc:.4f} | {hd95:.2f} | {seconds:.0f} |", flush=True)
    print()
    for config, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{config}: {statistics.mean(values):.4f} ± {spread:.4f} over {len(values)}")


if __name__ == "__main__":
    main()
