"""Self-training: does SAM's prior reach the final model through its pseudo-labels?

For each exemplar count and replicate, on the phantom (paper protocol, CPU grid settings):
extract, synthesize, train the adapter and the U-Net on the synthetic set (the teachers and the
reference), then `fewsam synth pseudo` with each teacher, and train the students on the
synthetic set plus the pseudo-labeled training slices, each with its own method's budget:

    adapter  -> adapter student ("adapter_st")  and U-Net student ("unet_st_sam")
    U-Net    -> U-Net student ("unet_st_unet"): self-training without SAM, the control

All models are scored by `fewsam evaluate infer/score` (prompt-free, and prompted for adapters).

    .venv/bin/python benchmarks/bench_selftrain.py --work /tmp/bench_selftrain \\
        [--counts 9 36] [--replicates 0 1 2] [--set train.max_steps=300 ...]

Runs already in <work>/results.jsonl are skipped, so an interrupted benchmark continues. Prints
a Markdown table of mean ± sd DSC over the replicates and the paired differences.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import h5py
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_suggest import fewsam, write_params  # noqa: E402

from fewsam.report_stats import case_dice  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The CPU grid's settings (docs/experiments.md), without the zero-shot baselines.
DEFAULT_SETS = (
    "synth.samples=1000",
    "train.max_steps=300",
    "train.warmup_steps=15",
    "baseline.max_steps=600",
    "evaluate.max_cases=6",
    "evaluate.zero_shot_prompts=[]",
    "evaluate.overlays_per_case=0",
)
# Method column -> (reports folder, metrics key, method in per_case.csv).
COLUMNS = {
    "adapter": ("teachers", "dsc_prompt_free", "prompt_free"),
    "adapter_prompted": ("teachers", "dsc", "prompted"),
    "unet": ("teachers", "unet_dsc", "unet"),
    "adapter_st": ("students_sam", "dsc_prompt_free", "prompt_free"),
    "adapter_st_prompted": ("students_sam", "dsc", "prompted"),
    "unet_st_sam": ("students_sam", "unet_dsc", "unet"),
    "unet_st_unet": ("students_unet", "unet_dsc", "unet"),
}
# Paired differences the table reports: (student, reference).
PAIRS = (
    ("adapter_st", "adapter"),
    ("unet_st_sam", "unet"),
    ("unet_st_unet", "unet"),
    ("unet_st_sam", "unet_st_unet"),
)


def make_params(run_dir: Path, n: int, replicate: int, sets: Sequence[str]) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["exemplars"] = n
    params["replicate"] = replicate
    params["dataset"]["root"] = str(REPO / params["dataset"]["root"])
    params["dataset"]["annotations"] = str(run_dir / "no-annotations")
    params["model"]["checkpoint"] = str(REPO / params["model"]["checkpoint"])
    return write_params(run_dir, params, sets)


def score(run_dir: Path, params: Path, adapter: str, unet: str, out: str) -> dict:
    fewsam(run_dir, params, "evaluate", "infer", "--adapter", adapter, "--unet", unet, "--out", out)
    fewsam(run_dir, params, "evaluate", "score", "--pred", f"{out}/predictions", "--out", out)
    return json.loads((run_dir / out / "metrics.json").read_text())


def one_run(work: Path, n: int, replicate: int, sets: Sequence[str]) -> dict:
    run_dir = work / f"n{n}-r{replicate}"
    run_dir.mkdir(parents=True, exist_ok=True)
    params = make_params(run_dir, n, replicate, sets)
    seconds: dict[str, float] = {}

    def step(name: str, *args: str) -> None:
        start = time.perf_counter()
        fewsam(run_dir, params, *args)
        seconds[name] = seconds.get(name, 0.0) + round(time.perf_counter() - start, 1)

    step("extract", "synth", "extract", "--out", "exemplars.h5", "--csv", "exemplars.csv")
    step("synthesize", "synth", "run", "--exemplars", "exemplars.h5", "--out", "synthetic.h5")

    def train(data: str, adapter: str | None, unet: str) -> None:
        if adapter is not None:
            step("train", "train", "run", "--data", data, "--out", adapter, "--log", "log.csv")
        step("baseline", "train", "baseline", "--data", data, "--out", unet, "--log", "log.csv")

    train("synthetic.h5", "adapter", "unet")
    for teacher, folder in (("--adapter", "adapter"), ("--unet", "unet")):
        step(
            "pseudo",
            *("synth", "pseudo", teacher, folder, "--data", "synthetic.h5"),
            *("--exemplars", "exemplars.h5", "--out", f"st_{folder.replace('adapter', 'sam')}.h5"),
        )
    train("st_sam.h5", "adapter_st", "unet_st_sam")
    train("st_unet.h5", None, "unet_st_unet")
    metrics = {
        "teachers": score(run_dir, params, "adapter", "unet", "teachers"),
        "students_sam": score(run_dir, params, "adapter_st", "unet_st_sam", "students_sam"),
        "students_unet": score(run_dir, params, "adapter_st", "unet_st_unet", "students_unet"),
    }
    with h5py.File(run_dir / "st_sam.h5", "r") as f:
        record = json.loads(f.attrs["params"])["selftrain"]
    for name in ("synthetic.h5", "st_sam.h5", "st_unet.h5"):
        (run_dir / name).unlink()  # the largest files; nothing reads them again
    return {
        "exemplars": n,
        "replicate": replicate,
        **{col: metrics[folder][key] for col, (folder, key, _) in COLUMNS.items()},
        "case_dice": case_dice_of(run_dir),
        "teacher_train_dice": teacher_dice(run_dir),
        "pseudo_slices": record["slices"],
        "seconds": seconds,
        "sets": list(sets),
        "machine": f"{platform.processor() or platform.machine()}",
    }


def case_dice_of(run_dir: Path) -> dict[str, dict[str, float]]:
    """Column -> case -> the case's mean Dice over its classes (for paired differences)."""
    return {
        col: case_dice((run_dir / folder / "per_case.csv").read_text(), method)
        for col, (folder, _, method) in COLUMNS.items()
    }


def teacher_dice(run_dir: Path) -> dict[str, float]:
    """Each teacher's prompt-free DSC on the training scans it pseudo-labels (their labels are
    read here only to score the pseudo-labels; `fewsam synth pseudo` never uses them)."""
    from core.params import load_params
    from evaluate.protocols import score_case
    from evaluate.protocols import summarize as summarize_scores
    from evaluate.pseudo import open_teacher
    from synth.datasets import open_dataset

    params = load_params(run_dir / "params.yaml")
    reader = open_dataset(params.dataset, params.seed)
    k = len(reader.classes)
    out = {}
    for kind in ("adapter", "unet"):
        folders = {"adapter": None, "unet": None, kind: run_dir / kind}
        teacher = open_teacher(params, reader, folders["adapter"], folders["unet"])
        scores = []
        for case in reader.cases("train"):
            volume = reader.load(case)
            assert volume.label is not None
            pred = teacher.segment(volume.image)
            scores.append(
                score_case(pred, volume.label, k, volume.spacing, params.evaluate.protocol)
            )
        out[kind] = round(float(summarize_scores(scores, k).dice or 0.0), 6)
    return out


def summarize(results: list[dict]) -> str:
    def cell(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.3f}" if values else "—"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    lines = [
        "| exemplars | replicates | " + " | ".join(COLUMNS) + " |",
        "|---:|---:|" + "---:|" * len(COLUMNS),
    ]
    diffs = ["", "| exemplars | " + " | ".join(f"{a} − {b}" for a, b in PAIRS) + " |"]
    diffs.append("|---:|" + "---:|" * len(PAIRS))
    for n in sorted({r["exemplars"] for r in results}):
        rows = sorted((r for r in results if r["exemplars"] == n), key=lambda r: r["replicate"])
        cols = [cell([r[c] for r in rows]) for c in COLUMNS]
        lines.append(f"| {n} | {len(rows)} | " + " | ".join(cols) + " |")
        pairs = [cell([r[a] - r[b] for r in rows]) for a, b in PAIRS]
        diffs.append(f"| {n} | " + " | ".join(pairs) + " |")
    return "\n".join(lines + diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[9, 36])
    parser.add_argument("--replicates", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    sets = [*DEFAULT_SETS, *args.sets]
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.jsonl"
    results = [json.loads(line) for line in results_path.open()] if results_path.exists() else []
    for r in results:  # records written before per-case Dice was kept
        run_dir = args.work / f"n{r['exemplars']}-r{r['replicate']}"
        if "case_dice" not in r and run_dir.is_dir():
            r["case_dice"] = case_dice_of(run_dir)
        if "teacher_train_dice" not in r and run_dir.is_dir():
            r["teacher_train_dice"] = teacher_dice(run_dir)
    results_path.write_text("".join(json.dumps(r) + "\n" for r in results))
    done = {(r["exemplars"], r["replicate"]) for r in results}
    for r in args.replicates:
        for n in args.counts:
            if (n, r) in done:
                continue
            start = time.perf_counter()
            result = one_run(args.work, n, r, sets)
            with results_path.open("a") as f:
                f.write(json.dumps(result) + "\n")
            results.append(result)
            print(
                f"n={n} r={r}: "
                + ", ".join(f"{c} {result[c]:.3f}" for c in COLUMNS)
                + f" ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    print(summarize(results))


if __name__ == "__main__":
    main()
