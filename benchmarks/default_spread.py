"""The default run's replicate spread, from the archive: one schedule against another.

Each group is the archived experiments `<prefix>-s<replicate>` (the full default settings,
`dvc exp run -n <prefix>-s$r -S replicate=$r ...`). For each group and method: mean ± sd of the
mean DSC over replicates, the range (max − min), and the replicates' U-Net − fewsam prompt-free
difference, which is the comparison the default run exists to show; then the seconds each model
trained (median over replicates, from the training logs the archive keeps). Prints Markdown.

    PYTHONPATH=. .venv/bin/python benchmarks/default_spread.py --groups default steps600
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from benchmarks import recipe_study
from fewsam import exp_archive
from fewsam.exp_records import ExpRecord

METHODS = (
    ("dsc", "fewsam, prompted"),
    ("dsc_prompt_free", "fewsam, prompt-free"),
    ("unet_dsc", "U-Net"),
    ("zero_shot_dsc", "zero-shot SAM, point"),
    ("zero_shot_box_dsc", "zero-shot SAM, box"),
)


def mean_sd(values: list[float]) -> str:
    """recipe_study's mean ± sd (%), with the range (max − min) after it."""
    if not values:
        return "–"
    return f"{recipe_study.mean_sd(list(values))} (range {100 * (max(values) - min(values)):.2f})"


def groups_of(records: list[ExpRecord], prefixes: list[str]) -> dict[str, list[ExpRecord]]:
    found: dict[str, dict[int, ExpRecord]] = {p: {} for p in prefixes}
    for record in records:
        for prefix in prefixes:
            m = re.fullmatch(rf"{re.escape(prefix)}-s(\d+)", record.name)
            if m:
                found[prefix][int(m[1])] = record
    return {p: [runs[r] for r in sorted(runs)] for p, runs in found.items()}


def seconds(runs: list[ExpRecord], model: str) -> str:
    budgets = [r.budget[model] for r in runs if r.budget and model in r.budget]
    if not budgets:
        return "–"
    steps = {int(b[0]) for b in budgets}
    return f"{'/'.join(map(str, sorted(steps)))} steps, {statistics.median(b[1] for b in budgets):.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path("docs/grid_cpu_records.json"))
    parser.add_argument("--groups", nargs="+", default=["default", "steps600"])
    args = parser.parse_args()
    groups = groups_of(exp_archive.load(args.archive), args.groups)
    print("| method | " + " | ".join(f"`{p}-s*` (n={len(groups[p])})" for p in args.groups) + " |")
    print("|---|" + "---:|" * len(args.groups))
    for key, title in METHODS:
        cells = [
            mean_sd([r.metrics[key] for r in groups[p] if r.metrics.get(key) is not None])
            for p in args.groups
        ]
        print(f"| {title} | " + " | ".join(cells) + " |")
    gaps = [
        mean_sd(
            [
                r.metrics["unet_dsc"] - r.metrics["dsc_prompt_free"]
                for r in groups[p]
                if r.metrics.get("unet_dsc") is not None
            ]
        )
        for p in args.groups
    ]
    print("| U-Net − fewsam prompt-free | " + " | ".join(gaps) + " |")
    for model, title in (("adapter", "adapter trained"), ("unet", "U-Net trained")):
        print(f"| {title} | " + " | ".join(seconds(groups[p], model) for p in args.groups) + " |")


if __name__ == "__main__":
    main()
