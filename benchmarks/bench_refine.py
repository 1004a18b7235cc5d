"""SAM as the refiner, studied: which boxes, which margin, when to trust the refined mask.

For each source of label maps (the trained models' prompt-free predictions of one or more
experiments, and the ground truth itself as the ceiling: its largest component per organ and
slice, margin 0) the refiner answers every box once per (source, margin) on slices embedded once
each; the trust rules are then applied offline, so one pass scores the whole grid of
(margin, min_score, min_agreement). Scores are 3D Dice per class and case (the `transunet`
protocol of `fewsam evaluate score`), meaned over classes then cases, on the first `--cases` test
cases of the params' dataset.

Predictions come from `reports/predictions` folders, or from finished DVC experiments by name
(`--exp NAME ...`): their `dvc.lock` names the predictions folder in the DVC cache, so nothing is
re-run or checked out. Writes a JSON record (`--out`) and prints the table.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_refine.py --refiner litemedsam \\
        --exp lr005-9-synth-s0 lr005-9-synth-s1 --cases 3 --out reports/bench_refine.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from core.params import load_params
from core.volume import to_zyx
from evaluate.layout import evaluation_cases
from evaluate.protocols import score_case
from evaluate.refine import Trust, assemble, open_refiner, propose_volumes
from synth.datasets import open_dataset

METHODS = ("prompt_free", "unet")
MIN_SCORES = (-1e9, 0.5, 0.7, 0.8, 0.9)
MIN_AGREEMENTS = (0.0, 0.5, 0.7, 0.8)


def exp_predictions(name: str) -> dict[str, Path]:
    """relpath -> cached file of the `reports/predictions` folder of experiment `name`."""
    refs = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    ref = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    if len(ref) != 1:
        raise SystemExit(f"experiment {name}: {len(ref)} refs found")
    lock = yaml.safe_load(
        subprocess.run(["git", "show", f"{ref[0]}:dvc.lock"], capture_output=True, text=True,
                       check=True).stdout
    )  # fmt: skip
    out = next(o for o in lock["stages"]["infer"]["outs"] if o["path"] == "reports/predictions")
    cache = Path(".dvc/cache/files/md5")
    md5 = out["md5"]
    listing = json.loads((cache / md5[:2] / md5[2:]).read_text())
    return {e["relpath"]: cache / e["md5"][:2] / e["md5"][2:] for e in listing}


def load_nifti_bytes(path: Path) -> nib.Nifti1Image:
    """A NIfTI file by content (DVC's cache names carry no extension), gzipped or not."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return nib.Nifti1Image.from_bytes(data)


def case_dice(pred: np.ndarray, gt: np.ndarray, k: int, spacing: tuple[float, ...]) -> list[float]:
    return [s.dice for s in score_case(pred, gt, k, spacing, "transunet")]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--refiner", default="litemedsam", choices=["litemedsam", "base"])
    parser.add_argument("--exp", nargs="*", default=[], help="finished DVC experiments")
    parser.add_argument("--pred", nargs="*", type=Path, default=[], help="predictions folders")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--margins", type=int, nargs="+", default=[0, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the ground-truth boxes (the ceiling)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/bench_refine.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    reader = open_dataset(params.dataset, params.seed)
    k = len(reader.classes)
    cases = evaluation_cases(reader, args.cases)
    sources: dict[str, dict[str, Path]] = {}
    for name in args.exp:
        sources[name] = exp_predictions(name)
    for folder in args.pred:
        sources[str(folder)] = {
            str(p.relative_to(folder)): p for p in folder.rglob("*.nii.gz") if p.is_file()
        }
    engine = open_refiner(args.refiner, params.model, k)
    # (source, method, margin, min_score, min_agreement) -> per case, per class Dice
    dice: dict[str, list[list[float]]] = {}
    seconds, slices = 0.0, 0
    for case in cases:
        source = reader.load(case, resize=False)
        gt = source.label
        labels = {} if args.no_ceiling else {"ground_truth": gt}
        for src, files in sources.items():
            for method in METHODS:
                path = files.get(f"{method}/{case}.nii.gz")
                if path is not None:
                    img = load_nifti_bytes(path)
                    pred = to_zyx(np.asarray(img.dataobj).astype(np.uint8), source.affine)
                    labels[f"{src}/{method}"] = pred
        for name, label in labels.items():
            if name != "ground_truth":
                key = f"{name}|unrefined"
                dice.setdefault(key, []).append(case_dice(label, gt, k, source.spacing))
        start = time.perf_counter()
        # The ceiling is the ground truth's own box (margin 0) only; the decoder's cost is per
        # box, so the other margins are not asked of it.
        predicted = {n: lab for n, lab in labels.items() if n != "ground_truth"}
        proposals = propose_volumes(engine, source.image, predicted, k, tuple(args.margins))
        if "ground_truth" in labels:
            proposals.update(propose_volumes(engine, source.image, {"ground_truth": gt}, k, (0,)))
        seconds += time.perf_counter() - start
        slices += sum(1 for z in range(gt.shape[0]) if any(lab[z].any() for lab in labels.values()))
        for (name, margin), per_slice in proposals.items():
            rules = [(-1e9, 0.0)] if name == "ground_truth" else [
                (s, a) for s in MIN_SCORES for a in MIN_AGREEMENTS
            ]  # fmt: skip
            for min_score, min_agreement in rules:
                trust = Trust(min_score, min_agreement)
                refined = np.stack(
                    [assemble(labels[name][z], per_slice[z], trust) for z in range(len(gt))]
                )
                key = f"{name}|m{margin}|s{min_score:g}|a{min_agreement:g}"
                dice.setdefault(key, []).append(case_dice(refined, gt, k, source.spacing))
        print(f"{case}: {time.perf_counter() - start:.0f} s", flush=True)
    means = {key: float(np.mean([np.mean(c) for c in v])) for key, v in dice.items()}
    per_class = {key: np.mean(np.asarray(v), axis=0).round(4).tolist() for key, v in dice.items()}
    record = {
        "command": "benchmarks/bench_refine.py "
        + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
        ),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cases": cases,
        "classes": list(reader.classes),
        "seconds_per_embedded_slice": seconds / max(slices, 1),
        "mean_dice": means,
        "class_dice": per_class,
        "case_dice": {key: [float(np.mean(c)) for c in v] for key, v in dice.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(args.out)
    for key in sorted(means):
        print(f"{means[key]:.4f}  {key}")


if __name__ == "__main__":
    main()
