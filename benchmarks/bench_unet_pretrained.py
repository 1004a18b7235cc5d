"""Does a pretrained start narrow the U-Net's spread? The U-Net pretrained once without labels
on the training scans, then trained as the pipeline trains it, against the pipeline's U-Net.

fewsam's replicates all start from one pretrained base and move by tenths of a point; the U-Net's
start from their own random weights and move by points. This benchmark gives the U-Net a start
of its own that every replicate shares: BasicUNet (the baseline's features and norm, the scans'
channels as output) pretrained by masked-patch inpainting on the body slices of the training
scans (no label is used; the test scans are not seen): each step blanks half of the 16 x 16
patches of `--batch` random slices and regresses the blanked pixels (L1), AdamW at `--lr` with
a linear decay, `--pretrain-steps` steps, seed fixed. Each replicate then builds the U-Net of
the classes, copies every pretrained weight but the output convolution (which keeps the
replicate's random initialization, as a fewsam replicate draws its class embeddings), and
trains and scores exactly as `benchmarks/bench_unet_ensemble.py` does (same data, loss,
schedule, steps; 12 test cases, post-processed). The pretraining's seconds are printed apart:
like SAM's, they are paid once, not per model.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_unet_pretrained.py --data data/synthetic.h5 \\
        --replicates 0 1 2 3 [--pretrain-steps 1000] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets import BasicUNet

import baseline.loop as loop
from baseline.network import NORMS, unet_logits
from core.params import Params, load_params
from core.schema import read_synthetic_info
from suggest.features import body_slices
from synth.datasets import open_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_baseline import unet_scorer  # noqa: E402

PATCH = 16


def training_slices(params: Params) -> np.ndarray:
    """N x C x H x W float32: the body slices of the training scans, at the pipeline's size."""
    reader = open_dataset(params.dataset, params.seed)
    slices = []
    for case in reader.cases("train"):
        image = reader.load(case).image  # C x Z x H x W in [0, 1]
        slices += [image[:, z] for z in body_slices(image, params.suggest.body_fraction)]
    return np.stack(slices).astype(np.float32)


def pretrain(params: Params, slices: np.ndarray, steps: int, batch: int, lr: float) -> dict:
    """State dict of a BasicUNet pretrained by masked-patch inpainting on `slices`."""
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    bp = params.baseline
    channels = slices.shape[1]
    net = BasicUNet(
        spatial_dims=2,
        in_channels=channels,
        out_channels=channels,
        features=tuple(int(f) for f in bp.features),
        norm=NORMS[bp.norm],
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=bp.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    h, w = slices.shape[-2:]
    net.train()
    for step in range(steps):
        images = torch.from_numpy(slices[rng.integers(0, len(slices), batch)])
        keep = rng.random((batch, 1, -(-h // PATCH), -(-w // PATCH))) >= 0.5
        keep = np.kron(keep, np.ones((1, 1, PATCH, PATCH)))[..., :h, :w]
        blanked = torch.from_numpy(1.0 - keep).float()
        out = unet_logits(net, images * (1 - blanked))
        loss = ((out - images).abs() * blanked).sum() / blanked.sum().clamp_min(1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"# pretrain step {step}: masked L1 {float(loss.detach()):.4f}", flush=True)
    return {k: v for k, v in net.state_dict().items() if not k.startswith("final_conv.")}


def start_from(state: dict) -> None:
    """Make the baseline's training build its U-Net from `state` (output layer excepted)."""
    build = loop.build_unet

    def build_pretrained(*args, **kwargs):  # type: ignore[no-untyped-def]
        net = build(*args, **kwargs)
        missing, unexpected = net.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("final_conv.") for k in missing)
        return net

    loop.build_unet = build_pretrained  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/synthetic.h5"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--replicates", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    base = load_params(args.params)
    score_both, n_cases = unet_scorer(base)
    info = read_synthetic_info(args.data)
    slices = training_slices(base)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; {args.data}, {n_cases} test "
        f"cases; pretraining on {len(slices)} training-scan slices, {args.pretrain_steps} steps "
        f"of batch {args.batch}, lr {args.lr}; then {base.baseline.max_steps} steps, "
        f"norm {base.baseline.norm}"
    )
    start = time.perf_counter()
    state = pretrain(base, slices, args.pretrain_steps, args.batch, args.lr)
    print(f"# pretraining took {time.perf_counter() - start:.0f} s (once for every replicate)")
    start_from(state)
    print("| replicate | DSC | HD95 | seconds trained |")
    print("|---:|---:|---:|---:|")
    values = []
    for r in args.replicates:
        params = dataclasses.replace(base, replicate=r)
        t = time.perf_counter()
        net, _ = loop.train_unet(params, info)
        seconds = time.perf_counter() - t
        dsc, hd95 = score_both(net)
        values.append(dsc)
        print(f"| {r} | {dsc:.4f} | {hd95:.2f} | {seconds:.0f} |", flush=True)
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    print(f"pretrained start: {statistics.mean(values):.4f} ± {spread:.4f} over {len(values)}")


if __name__ == "__main__":
    main()
