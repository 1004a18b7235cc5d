"""The adaptation recipe study, from the grid archive: each setting against the paper's recipe.

Every setting is a group of archived experiments `<prefix>-<exemplars>-synth-s<replicate>`
(CPU grid settings: 300 steps, 1000 synthetic samples, 6 test cases). For each, at each exemplar
count: prompted and prompt-free DSC as mean ± sd over replicates, the U-Net on the same data,
and the paired difference of prompted DSC from the paper's recipe (`synapse-*`: LoRA rank 4,
lr 0.001) over (replicate, test case) pairs with its bootstrap 95% interval. The setting's
command is what its params change against the paper's recipe. Prints a Markdown table.

    PYTHONPATH=. .venv/bin/python benchmarks/recipe_study.py [--archive docs/grid_cpu_records.json]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from fewsam import exp_archive
from fewsam.exp_records import ExpRecord
from fewsam.report_stats import bootstrap_mean_ci, paired_differences, summarize

REFERENCE = "synapse"
NAME = re.compile(r"^(?P<prefix>.+)-(?P<n>\d+)-synth-s(?P<r>\d+)$")
# The new default (lr 0.005), against which the screens of other knobs are read.
DEFAULT = "lr005"
KEYS = (
    "train.lr",
    "lora.rank",
    "lora.alpha",
    "lora.finetune",
    "lora.fine_head",
    "loss.dice_background",
    "train.prompt_dropout",
    "train.points_per_class",
    "evaluate.postprocess",
)
# Archived before the keys existed.
FALLBACK = {"finetune": "lora", "fine_head": False, "postprocess": "none"}


def flat(params: dict[str, Any], key: str) -> Any:
    section, name = key.split(".")
    return params.get(section, {}).get(name, FALLBACK.get(name))


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def mean_sd(values: list[float | None]) -> str:
    s = summarize(values)
    if s.mean is None:
        return "–"
    return f"{100 * s.mean:.2f}" + ("" if s.sd is None else f" ± {100 * s.sd:.2f}")


def paired(runs: dict[int, ExpRecord], other: dict[int, ExpRecord]) -> str:
    """Mean paired difference of prompted DSC over shared (replicate, case) pairs, with its
    bootstrap 95% interval, in points."""
    on = {r: rec.cases or {} for r, rec in runs.items()}
    off = {r: rec.cases or {} for r, rec in other.items()}
    diffs = paired_differences(on, off)
    if not diffs:
        return "–"
    ci = bootstrap_mean_ci(diffs)
    return f"{100 * ci.mean:+.2f} [{100 * ci.low:+.2f}, {100 * ci.high:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=Path("docs/grid_cpu_records.json"))
    args = parser.parse_args()
    groups: dict[tuple[str, int], dict[int, ExpRecord]] = defaultdict(dict)
    for record in exp_archive.load(args.archive):
        m = NAME.match(record.name)
        if m:
            groups[(m["prefix"], int(m["n"]))][int(m["r"])] = record
    print(
        "| setting | exemplars | command (`-S` against the paper's recipe) | n | DSC prompted (%) "
        "| DSC prompt-free (%) | U-Net (%) | Δ prompted vs paper [95% CI] "
        "| Δ prompted vs lr 0.005 [95% CI] |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for (prefix, n), runs in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0] != REFERENCE)):
        reference = groups.get((REFERENCE, n))
        if reference is None or not any(r.params.get("train") for r in runs.values()):
            continue
        first = next(iter(runs.values()))
        ref_params = next(iter(reference.values())).params
        changed = [
            f"{k}={flat(first.params, k)}"
            for k in KEYS
            if flat(first.params, k) != flat(ref_params, k)
        ]
        if prefix != REFERENCE and not changed:
            continue  # a grid of other knobs (synthesis ablations), not a recipe
        diff = paired(runs, reference) if prefix != REFERENCE else "–"
        default = groups.get((DEFAULT, n))
        diff_default = "–"
        if default is not None and prefix not in (REFERENCE, DEFAULT):
            diff_default = paired(runs, default)
        recs = [runs[r] for r in sorted(runs)]
        print(
            f"| {prefix} | {n} | {' '.join(changed) or '(paper: lr 0.001, rank 4)'} | {len(recs)} "
            f"| {mean_sd([r.metrics.get('dsc') for r in recs])} "
            f"| {mean_sd([r.metrics.get('dsc_prompt_free') for r in recs])} "
            f"| {mean_sd([r.metrics.get('unet_dsc') for r in recs])} | {diff} | {diff_default} |"
        )


if __name__ == "__main__":
    main()
