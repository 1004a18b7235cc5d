"""The default run's replicate spread, from the archive: one schedule against another.

Each group is the archived experiments `<prefix>-s<replicate>` (the full default settings,
`dvc exp run -n <prefix>-s$r -S replicate=$r ...`). For each group and method: mean ± sd of the
mean DSC over replicates, the range (max − min), and the replicates' U-Net − fewsam prompt-free
difference, which is the comparison the default run exists to show; then the seconds each model
trained (median over replicates, from the training logs the archive keeps). Prints Markdown.

A group may join several prefixes with `+` (`--groups a+b`): the runs of both, as one group
(three more replicates of a setting queued under a new name, for instance).

    PYTHONPATH=. .venv/bin/python benchmarks/default_spread.py --groups default steps600
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks import recipe_study
from fewsam import doc_tables, exp_archive
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


def label(spec: str) -> str:
    return " + ".join(f"`{prefix}-s*`" for prefix in spec.split("+"))


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
    records = exp_archive.load(args.archive)
    groups = {spec: doc_tables.replicate_groups(records, spec) for spec in args.groups}
    print(
        "| method | " + " | ".join(f"{label(p)} (n={len(groups[p])})" for p in args.groups) + " |"
    )
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
