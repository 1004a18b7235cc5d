"""The statistics of `fewsam report`: mean ± sd over replicates, paired per-case differences
with a bootstrap confidence interval, training budgets from logs. Pure functions on plain
numbers and CSV text.

Paired differences: two grid points run with the same replicates (synthesis on and off) are
scored on the same test cases, so each (replicate, case) gives one difference of the case's mean
Dice over its classes. The interval is the percentile bootstrap of the mean difference over
those pairs (resampled with replacement, a fixed seed so the report is reproducible). Pairs from
one replicate share its training run, so they are not independent; the interval describes the
spread over cases and replicates together and is narrower than one over replicates alone.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Summary:
    """mean and sample sd (ddof 1; None for n < 2) of n values; mean None when n is 0."""

    mean: float | None
    sd: float | None
    n: int


def summarize(values: Sequence[float | None]) -> Summary:
    """Summary of the values that are not None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return Summary(None, None, 0)
    sd = float(np.std(xs, ddof=1)) if len(xs) > 1 else None
    if sd is not None and min(xs) == max(xs):
        sd = 0.0  # equal values (zero-shot SAM in every replicate) give rounding noise, ~1e-17
    return Summary(float(np.mean(xs)), sd, len(xs))


@dataclass(frozen=True)
class Interval:
    """Mean paired difference and its bootstrap 95% interval [low, high], over n pairs."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean_ci(
    diffs: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES
) -> Interval:
    """Percentile bootstrap interval of the mean of `diffs` (at least one value)."""
    x = np.asarray(diffs, dtype=np.float64)
    assert x.size >= 1, "no differences"
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(x.mean()), float(low), float(high), int(x.size))


def case_dice(per_case_csv: str, method: str) -> dict[str, float]:
    """Per case, the mean Dice over the classes scored for `method`, from a per_case.csv text
    (columns case, method, class, outcome, dice, hd95; an empty dice is a class not scored)."""
    sums: dict[str, list[float]] = defaultdict(list)
    for row in csv.DictReader(io.StringIO(per_case_csv)):
        if row.get("method") != method or not (row.get("dice") or "").strip():
            continue
        value = float(row["dice"])
        if not math.isnan(value):
            sums[row["case"]].append(value)
    return {case: float(np.mean(v)) for case, v in sums.items()}


def paired_differences(
    on: Mapping[int, Mapping[str, float]], off: Mapping[int, Mapping[str, float]]
) -> list[float]:
    """on - off for every (replicate, case) present in both: `on[r][case]` is a case's Dice."""
    diffs = []
    for r in sorted(set(on) & set(off)):
        for case in sorted(set(on[r]) & set(off[r])):
            diffs.append(on[r][case] - off[r][case])
    return diffs


def log_budget(log_csv: str) -> tuple[int, float]:
    """(steps, seconds) of a training log (train_log.csv, baseline_log.csv: one row per optimizer
    step, its `seconds` the wall seconds of that step): the number of rows and the sum of
    `seconds`. Raises ValueError without a `seconds` column or with a value that is no finite
    number."""
    reader = csv.DictReader(io.StringIO(log_csv))
    if "seconds" not in (reader.fieldnames or []):
        raise ValueError("no `seconds` column")
    steps, seconds = 0, 0.0
    for row in reader:
        try:
            value = float(row["seconds"])
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"line {reader.line_num}: seconds {row['seconds']!r} is no number")
        steps, seconds = steps + 1, seconds + value
    return steps, seconds
