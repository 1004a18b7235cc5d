"""What `evaluate.postprocess` (each class's largest 3D component) does to each method's scores.

Two modes, both printing mean DSC and per-class DSC without and with the post-processing:

- `--pred DIR`: the label maps of a finished `evaluate infer` run made with
  `evaluate.postprocess: none` (one subfolder per method), scored as they are, with the largest
  6-connected component per class (the param's) and, for comparison, the largest 26-connected one.
- `--unet-replicates R ...`: the U-Net of `params.yaml` trained on `--data` once per replicate
  (the synthetic set held fixed: only its initialization and batch order change) and each run
  scored both ways, with the mean ± sd over replicates: does the post-processing narrow the
  spread as well as lift the mean?

    PYTHONPATH=. .venv/bin/python benchmarks/bench_postprocess.py --pred /tmp/raw/predictions
    PYTHONPATH=. .venv/bin/python benchmarks/bench_postprocess.py --data data/synthetic.h5 \\
        --unet-replicates 0 1 2 3 4 [--params params.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from baseline.loop import train_unet
from baseline.network import predict_unet
from core.params import Params, load_params
from core.schema import read_synthetic_info
from core.volume import Volume
from evaluate.layout import evaluation_cases
from evaluate.postprocess import largest_components
from evaluate.protocols import Summary, score_case, summarize
from evaluate.score import Truth, find_predictions, read_prediction
from synth.datasets import open_dataset
from synth.datasets.base import resize_volume


def largest_26(label: np.ndarray, k: int) -> np.ndarray:
    """Largest component per class under 26-connectivity (faces, edges and corners)."""
    return largest_components(label, k, ndimage.generate_binary_structure(3, 3))


WAYS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "none": lambda label, _k: label,
    "largest_component": largest_components,
    "largest_26": largest_26,
}


def row(name: str, s: Summary) -> str:
    cells = ("–" if d is None else f"{100 * d:.1f}" for d in s.class_dice)
    return f"| {name} | {100 * (s.dice or 0):.2f} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--pred", type=Path, help="predictions made with postprocess none")
    parser.add_argument("--data", type=Path, default=Path("data/synthetic.h5"))
    parser.add_argument("--unet-replicates", type=int, nargs="*", default=[])
    args = parser.parse_args()
    params = load_params(args.params)
    reader = open_dataset(params.dataset, params.seed)
    k, protocol = len(reader.classes), params.evaluate.protocol
    volumes = [
        reader.load(c, resize=False) for c in evaluation_cases(reader, params.evaluate.max_cases)
    ]
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{len(volumes)} test cases, protocol {protocol}; classes {', '.join(reader.classes)}"
    )
    print("| method, post-processing | mean DSC % | " + " | ".join(reader.classes) + " |")
    print("|---|---:|" + "---:|" * k)

    def score(maps: list[np.ndarray], way: str) -> Summary:
        return summarize(
            [
                score_case(WAYS[way](m, k), v.label, k, v.spacing, protocol)
                for m, v in zip(maps, volumes, strict=True)
            ],
            k,
        )

    if args.pred is not None:
        truths = [Truth.of_volume(v) for v in volumes]
        for method, found in find_predictions(args.pred).items():
            maps = [read_prediction(found.files[t.case], t, k) for t in truths]
            for way in WAYS:
                print(row(f"{method}, {way}", score(maps, way)), flush=True)
    results: dict[str, list[float]] = {"none": [], "largest_component": []}
    for r in args.unet_replicates:
        start = time.perf_counter()
        run = dataclasses.replace(params, replicate=r)
        net, _ = train_unet(run, read_synthetic_info(args.data))
        maps = [unet_map(net, v, run) for v in volumes]
        for way, values in results.items():
            s = score(maps, way)
            values.append(float(s.dice or 0))
            print(row(f"U-Net replicate {r}, {way}", s) + f" ({time.perf_counter() - start:.0f} s)")
    if len(args.unet_replicates) > 1:
        for way, values in results.items():
            mean, sd = 100 * statistics.mean(values), 100 * statistics.stdev(values)
            print(f"# U-Net, {way}: {mean:.2f} ± {sd:.2f} (n={len(values)})")


def unet_map(net: torch.nn.Module, volume: Volume, params: Params) -> np.ndarray:
    """The U-Net's label map of a test volume on its source grid, without post-processing."""
    view = resize_volume(volume, params.dataset.slice_size)
    out_hw = (int(volume.image.shape[2]), int(volume.image.shape[3]))
    return predict_unet(net, view.image, params.evaluate.batch_size, out_hw=out_hw)


if __name__ == "__main__":
    main()
