"""Peak memory of extraction, evaluation and `predict` on 512 x 512 CT volumes of Z slices.

For each Z a NIfTI dataset (nnU-Net layout, one training and one test case, int16 HU, two
organs on the middle 60 % of the slices) is written, and each stage runs in a fresh child
process through the `fewsam` command: `synth extract`, `evaluate infer` (adapted prompt-free and
prompted, zero-shot SAM, NIfTI predictions), `evaluate score` (scoring those files) and
`predict` on the test scan. The tiny
SAM at 64 px with random weights keeps the model small, so the figures show the data path. The
child reports VmHWM (peak resident memory) from /proc/self/status before the stage (imports,
model code) and after it; the difference is what the stage's data cost.

    .venv/bin/python benchmarks/bench_scale.py [--slices 100 300] [--side 512] [--threads 2]
        [--stages extract infer score predict] [--keep DIR]

Memory that does not scale with the slices beyond the volume itself means: peak(300) - peak(100)
is a small constant times the 200 extra slices of one float32 volume.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("liver", "spleen")


def status_kib(key: str) -> int:
    """A `/proc/self/status` field in KiB (VmHWM: peak resident set, VmRSS: current)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def write_case(root: Path, split: str, case: str, side: int, z: int, seed: int) -> None:
    """Image (int16 HU) and label (uint8) of one case, I x J x K = side x side x z."""
    label = np.zeros((side, side, z), np.uint8)
    lo, hi = int(0.2 * z), int(0.8 * z)
    label[side // 4 : side // 2, side // 4 : 3 * side // 4, lo:hi] = 1
    label[5 * side // 8 : 7 * side // 8, side // 2 : 3 * side // 4, lo + 2 : hi - 2] = 2
    rng = np.random.default_rng(seed)
    noise = rng.integers(-20, 20, size=(side, side, 1), dtype=np.int16)  # one plane, repeated
    image = (label.astype(np.int16) * 60 + 40 + noise).astype(np.int16)
    affine = np.diag([0.75, 0.75, 2.5, 1.0])
    for folder, data in ((f"images{split}", image), (f"labels{split}", label)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), root / folder / f"{case}.nii.gz")


def make_project(work: Path, side: int, z: int) -> dict[str, Path]:
    """Dataset, params and an untrained adapter under `work`."""
    root = work / "dataset"
    write_case(root, "Tr", "train_000", side, z, 0)
    write_case(root, "Ts", "test_000", side, z, 1)
    labels = {"background": 0, **{name: i + 1 for i, name in enumerate(CLASSES)}}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels}))
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["exemplars"] = 4
    data["dataset"].update(format="nifti", root=str(root), classes=[], modality="CT", slice_size=0)
    data["synth"].update(pool_per_case=4)
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(device="cpu")
    data["evaluate"].update(
        batch_size=16, zero_shot_prompts=["point", "box"], overlays_per_case=1, max_cases=0
    )
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(data))

    import torch

    from core.params import parse_params, to_dict
    from train.adapter_io import save_adapter
    from train.model import build_fewsam

    p = parse_params(data)
    torch.manual_seed(0)
    model = build_fewsam(p.model, p.lora, len(CLASSES))
    config = {"classes": list(CLASSES), "channels": ["CT"], "dataset": to_dict(p.dataset)}
    save_adapter(model, work / "adapter", config)
    return {"params": params, "root": root, "adapter": work / "adapter"}


def stage_args(stage: str, work: Path, paths: dict[str, Path]) -> list[str]:
    p = ["--params", str(paths["params"])]
    if stage == "extract":
        return ["synth", "extract", *p, "--out", str(work / "ex.h5"), "--csv", str(work / "ex.csv")]
    if stage == "infer":
        return ["evaluate", "infer", *p, "--adapter", str(paths["adapter"]),
                "--out", str(work / "r")]  # fmt: skip
    if stage == "score":  # the predictions `infer` wrote
        return ["evaluate", "score", *p, "--pred", str(work / "r" / "predictions"),
                "--out", str(work / "r")]  # fmt: skip
    test = paths["root"] / "imagesTs" / "test_000.nii.gz"
    return ["predict", *p, "--adapter", str(paths["adapter"]), "-i", str(test),
            "-o", str(work / "pred.nii.gz")]  # fmt: skip


def child(args: list[str]) -> None:
    """Run one `fewsam` command in this process and print its memory figures as JSON."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    # Import what the command imports lazily, so the "before" figure holds the code, not data.
    import evaluate.infer  # noqa: F401
    import evaluate.predict  # noqa: F401
    import evaluate.score  # noqa: F401
    import synth.exemplars  # noqa: F401
    from fewsam.cli import app

    before = status_kib("VmHWM")
    start = time.perf_counter()
    code = app(args, standalone_mode=False)  # expected errors come back as the exit code
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(code)
    print(json.dumps({"before_kib": before, "peak_kib": status_kib("VmHWM"), "seconds": seconds}))


def measure(stage: str, work: Path, paths: dict[str, Path], threads: int) -> dict[str, float]:
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--child", *stage_args(stage, work, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", nargs="+", default=["extract", "infer", "score", "predict"])
    parser.add_argument("--keep", type=Path, default=None, help="Folder to keep the files in.")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="fewsam_scale_"))
    stages = tuple(args.stages)
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        for z in args.slices:
            work = base / f"z{z}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            paths = make_project(work, args.side, z)
            results[z] = {s: measure(s, work, paths, args.threads) for s in stages}
            print(f"z={z}: {json.dumps(results[z])}", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)

    mib = 1024.0
    volume = {z: args.side * args.side * z * 4 / 2**20 for z in args.slices}  # float32 MiB
    load = os.getloadavg()[0]
    print(
        f"`.venv/bin/python benchmarks/bench_scale.py --slices {' '.join(map(str, args.slices))} "
        f"--side {args.side} --threads {args.threads} --stages {' '.join(stages)}` on {platform.machine()}, {os.cpu_count()} cores (load average "
        f"{load:.1f}), torch threads {args.threads}; tiny SAM at 64 px, random weights.\n"
    )
    print("| stage | slices | float32 volume (MiB) | before (MiB) | peak (MiB) | stage cost (MiB) "
          "| cost / volume | s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in stages:
        for z in args.slices:
            r = results[z][s]
            cost = (r["peak_kib"] - r["before_kib"]) / mib
            print(
                f"| {s} | {z} | {volume[z]:.0f} | {r['before_kib'] / mib:.0f} | "
                f"{r['peak_kib'] / mib:.0f} | {cost:.0f} | {cost / volume[z]:.2f} | "
                f"{r['seconds']:.1f} |"
            )
    if len(args.slices) >= 2:
        lo, hi = min(args.slices), max(args.slices)
        extra = volume[hi] - volume[lo]
        print(f"\nGrowth from {lo} to {hi} slices, per MiB of extra float32 volume ({extra:.0f}):")
        for s in stages:
            grow = (results[hi][s]["peak_kib"] - results[lo][s]["peak_kib"]) / mib
            print(f"- {s}: +{grow:.0f} MiB peak = {grow / extra:.2f} x the extra volume")


if __name__ == "__main__":
    main()
