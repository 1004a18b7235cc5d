"""The documentation's result tables, generated from the records the project keeps.

A table in README.md, BENCHMARKS.md or a page of docs/ sits between `<!-- table:NAME:start -->` and
`<!-- table:NAME:end -->`; `fewsam report --docs` rewrites every such block from the records
and `--docs-check` says which differ (tests/test_doc_tables.py runs the check, so a committed
table cannot drift from its records). Sources, all committed:

- the grid archive (`docs/grid_cpu_records.json`, written by `fewsam report --archive`): the paper's
  grid (`synapse-*`), the default recipe at 1, 9 and 36 exemplars (`lcc-*`: lr 0.005 and the
  largest-component post-processing), the default run's replicates (`default-lcc-s*`);
- the refiner study (`docs/bench_refine_litemedsam.json`, `benchmarks/bench_refine.py`), read at
  the margin and trust rule params.yaml sets (`evaluate.refine_*`);
- the self-training study (`docs/bench_selftrain.jsonl`, `benchmarks/bench_selftrain.py`);
- `reports/metrics.json`, the default run of `make repro`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_text
from core.errors import InputError
from fewsam import exp_archive
from fewsam.exp_records import ExpRecord
from fewsam.paper_report import ablation_markdown, markdown
from fewsam.report_rows import table_rows
from fewsam.report_stats import Summary, bootstrap_mean_ci, paired_differences, summarize

ARCHIVE = Path("docs/grid_cpu_records.json")
REFINE = Path("docs/bench_refine_litemedsam.json")
SELFTRAIN = Path("docs/bench_selftrain.jsonl")
METRICS = Path("reports/metrics.json")
BLOCK = re.compile(
    r"(<!-- table:(?P<name>[a-z_]+):start -->\n)(?P<body>.*?)(<!-- table:(?P=name):end -->)",
    re.S,
)
NAME = re.compile(r"^(?P<prefix>.+)-(?P<n>\d+)-synth-s(?P<r>\d+)$")
# The default recipe's archived grid points, and the exemplar counts of the results table.
DEFAULT_PREFIX, COUNTS = "lcc", (1, 9, 36)
# The default run's replicates (`dvc exp run -n default-lcc-s$r -S replicate=$r`), and the same
# on the second CPU: replicates 0-2 (`default-lcc-intel-s*`) and 3-5, queued later under their
# own name (`default-lcc-intel-more-s*`). Groups as `replicate_groups` reads them.
DEFAULT_RUNS, SECOND_CPU_DEFAULT_RUNS = "default-lcc", "default-lcc-intel+default-lcc-intel-more"
# The same grid points re-run on a second CPU model (`lcc-*` ran on an AMD EPYC, these on an
# Intel Xeon): the results table gives the U-Net's row again from them, because the U-Net's
# replicates move between CPUs by as much as its spread (fewsam's by at most 0.4 points).
SECOND_CPU_PREFIX, SECOND_CPU, FIRST_CPU = "intel-lcc", "Intel Xeon", "AMD EPYC"
PAPER_PREFIX = "synapse"
# Methods of reports/metrics.json: (label, DSC key).
DEFAULT_METHODS = (
    ("fewsam, prompted (one point per organ)", "dsc"),
    ("fewsam, prompt-free", "dsc_prompt_free"),
    ("U-Net, same synthetic data", "unet_dsc"),
    ("zero-shot SAM, one point per organ", "zero_shot_dsc"),
    ("zero-shot SAM, ground-truth box per organ", "zero_shot_box_dsc"),
)


@dataclass(frozen=True)
class Sources:
    """What the tables are made from (see the module docstring)."""

    records: Sequence[ExpRecord]
    refine: Mapping[str, Any] | None
    metrics: Mapping[str, Any]
    refine_rule: tuple[int, float, float]  # margin, min_score, min_agreement
    selftrain: Sequence[Mapping[str, Any]] = ()


def load_sources(root: Path) -> Sources:
    from core.params import load_params

    ev = load_params(root / "params.yaml").evaluate
    refine_path = root / REFINE
    metrics_path = root / METRICS
    selftrain_path = root / SELFTRAIN
    try:
        refine = json.loads(refine_path.read_text()) if refine_path.exists() else None
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(metrics_path, f"cannot be read ({e})") from None
    try:
        lines = selftrain_path.read_text().splitlines() if selftrain_path.exists() else []
        selftrain = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as e:
        raise InputError(selftrain_path, f"cannot be read ({e})") from None
    return Sources(
        exp_archive.load(root / ARCHIVE),
        refine,
        metrics,
        (ev.refine_margin, ev.refine_min_score, ev.refine_min_agreement),
        selftrain,
    )


def _pct(s: Summary) -> str:
    if s.mean is None:
        return "–"
    # A method that draws nothing (zero-shot SAM) scores the same in every replicate.
    return f"{100 * s.mean:.2f}" + ("" if not s.sd else f" ± {100 * s.sd:.2f}")


def replicate_groups(records: Sequence[ExpRecord], spec: str) -> list[ExpRecord]:
    """The runs `<prefix>-s<r>` of every `+`-joined prefix of `spec`, by prefix then replicate."""
    runs: list[ExpRecord] = []
    for prefix in spec.split("+"):
        found: dict[int, ExpRecord] = {}
        for record in records:
            m = re.fullmatch(rf"{re.escape(prefix)}-s(\d+)", record.name)
            if m:
                found[int(m[1])] = record
        runs += [found[r] for r in sorted(found)]
    return runs


def _replicates(records: Sequence[ExpRecord], prefix: str) -> dict[int, dict[int, ExpRecord]]:
    """Exemplar count -> replicate -> the record `<prefix>-<n>-synth-s<r>`."""
    out: dict[int, dict[int, ExpRecord]] = defaultdict(dict)
    for rec in records:
        m = NAME.match(rec.name)
        if m and m["prefix"] == prefix:
            out[int(m["n"])][int(m["r"])] = rec
    return dict(out)


def _groups(records: Sequence[ExpRecord], prefix: str) -> dict[int, list[ExpRecord]]:
    """Exemplar count -> the replicates of `<prefix>-<n>-synth-s<r>`, by replicate."""
    return {n: [runs[r] for r in sorted(runs)] for n, runs in _replicates(records, prefix).items()}


def _refined(src: Sources, n: int, model: str) -> tuple[Summary, Summary] | None:
    """(unrefined, refined) mean ± sd over the replicates at `n` exemplars of `model`'s label
    maps (prompt_free | unet) on the refiner study's cases, at the params' margin and rule."""
    if src.refine is None:
        return None
    margin, score, agreement = src.refine_rule
    rule = f"m{margin}|s{-1e9 if score <= 0 else score:g}|a{agreement:g}"
    before, after = [], []
    for rep in range(10):
        name = f"{DEFAULT_PREFIX}-{n}-synth-s{rep}/{model}"
        cases = src.refine["case_dice"]
        if f"{name}|unrefined" not in cases:
            continue
        if f"{name}|{rule}" not in cases:
            raise InputError(REFINE, f"has no rule {rule} (evaluate.refine_* in params.yaml)")
        before.append(float(np.mean(cases[f"{name}|unrefined"])))
        after.append(float(np.mean(cases[f"{name}|{rule}"])))
    return (summarize(before), summarize(after)) if before else None


def results_table(src: Sources) -> str:
    """What SAM adds, at the default recipe: every method at 1, 9 and 36 exemplars (synthesis
    on), DSC % mean ± sd over replicates; refiner rows on the refiner study's cases."""
    groups = _groups(src.records, DEFAULT_PREFIX)
    counts = [n for n in COUNTS if n in groups]
    head = "| method | " + " | ".join(f"{n} exemplar{'s' * (n > 1)}" for n in counts) + " |"
    lines = [head, "|---|" + "---:|" * len(counts)]
    for label, key in DEFAULT_METHODS:
        cells = [_pct(summarize([r.metrics.get(key) for r in groups[n]])) for n in counts]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    second = _groups(src.records, SECOND_CPU_PREFIX)
    if any(n in second for n in counts):
        cells = [
            _pct(summarize([r.metrics.get("unet_dsc") for r in second[n]])) if n in second else "–"
            for n in counts
        ]
        lines.append(
            f"| U-Net, same synthetic data, the same replicates on another CPU ({SECOND_CPU}) | "
            + " | ".join(cells)
            + " |"
        )
    if src.refine is not None:
        k = len(src.refine["cases"])
        for label, model in (("fewsam prompt-free", "prompt_free"), ("U-Net", "unet")):
            cells = []
            for n in counts:
                pair = _refined(src, n, model)
                cells.append("–" if pair is None else f"{_pct(pair[1])} (from {_pct(pair[0])})")
            lines.append(
                f"| {label} + LiteMedSAM refiner, first {k} cases | " + " | ".join(cells) + " |"
            )
        ceiling = src.refine["case_dice"].get("ground_truth|m0|s-1e+09|a0")
        if ceiling:
            value = f"{100 * float(np.mean(ceiling)):.2f}"
            lines.append(
                f"| LiteMedSAM, ground-truth box per organ and slice, first {k} cases | "
                + " | ".join(value for _ in counts)
                + " |"
            )
    if src.selftrain:
        for label, student, teacher in SELFTRAIN_ROWS:
            cells = []
            for n in counts:
                runs = _selftrain_runs(src, n)
                if not runs:
                    cells.append("–")
                    continue
                after = summarize([r[student] for r in runs])
                before = summarize([r[teacher] for r in runs])
                cells.append(f"{_pct(after)} (from {_pct(before)})")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    reps = sorted({len(groups[n]) for n in counts})
    sources = [f"`{ARCHIVE}`"] + [f"`{REFINE}`"] * (src.refine is not None)
    sources += [f"`{SELFTRAIN}`"] * bool(src.selftrain)
    lines.append("")
    lines.append(
        f"DSC (%) over the 8 organs, mean ± sd over {'/'.join(map(str, reps))} replicates; "
        f"records: {', '.join(sources)}."
    )
    moved = _fewsam_moved(
        _replicates(src.records, DEFAULT_PREFIX), _replicates(src.records, SECOND_CPU_PREFIX)
    )
    if moved is not None:
        lines.append(
            f"The row on another CPU: the same params and replicates (`{SECOND_CPU_PREFIX}-*` in "
            f"the archive; the other grid rows ran on an {FIRST_CPU}); fewsam's DSC moved by at "
            f"most {100 * moved:.2f} points between the two CPUs."
        )
    if src.selftrain:
        lines.append(
            "The self-training rows were measured before `evaluate.postprocess` existed, on "
            "label maps without it (each row's \"from\" value is that map's own)."
        )
    return "\n".join(lines) + "\n"


def _fewsam_moved(
    first: Mapping[int, Mapping[int, ExpRecord]], second: Mapping[int, Mapping[int, ExpRecord]]
) -> float | None:
    """Largest change of fewsam's DSC (prompted or prompt-free) between the two CPUs' runs of
    the same exemplar count and replicate; None when no run is on both."""
    changes = [
        abs(float(rec.metrics[key]) - float(other.metrics[key]))
        for n, runs in second.items()
        for r, rec in runs.items()
        if (other := first.get(n, {}).get(r)) is not None
        for key in ("dsc", "dsc_prompt_free")
        if rec.metrics.get(key) is not None and other.metrics.get(key) is not None
    ]
    return max(changes) if changes else None


# Self-training rows: (label, student column, the model it is compared with) of
# benchmarks/bench_selftrain.py's records. The students train as long as their teachers did.
SELFTRAIN_ROWS = (
    ("fewsam prompt-free, retrained on its own pseudo-labels", "adapter_st", "adapter"),
    ("U-Net, retrained on fewsam's pseudo-labels", "unet_st_sam", "unet"),
    ("U-Net, retrained on its own pseudo-labels (no SAM)", "unet_st_unet", "unet"),
)
# The study's comparisons: (label, after column, before column).
SELFTRAIN_PAIRS = (
    *SELFTRAIN_ROWS[:1],
    (
        "fewsam prompted, retrained on its own pseudo-labels",
        "adapter_st_prompted",
        "adapter_prompted",
    ),
    *SELFTRAIN_ROWS[1:],
    ("U-Net: fewsam's pseudo-labels against its own", "unet_st_sam", "unet_st_unet"),
)


def _selftrain_runs(src: Sources, n: int) -> list[Mapping[str, Any]]:
    return sorted((r for r in src.selftrain if r["exemplars"] == n), key=lambda r: r["replicate"])


def selftrain_table(src: Sources) -> str:
    """The self-training study: each comparison at each exemplar count, mean ± sd over the
    replicates before and after, and the paired difference over (replicate, test case) with its
    bootstrap 95% interval."""
    lines = [
        "| exemplars | comparison | n | before (%) | after (%) | Δ [95% CI] |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in sorted({int(r["exemplars"]) for r in src.selftrain}):
        runs = _selftrain_runs(src, n)
        for label, after, before in SELFTRAIN_PAIRS:
            diffs = paired_differences(
                {r["replicate"]: r["case_dice"][after] for r in runs},
                {r["replicate"]: r["case_dice"][before] for r in runs},
            )
            ci = bootstrap_mean_ci(diffs)
            lines.append(
                f"| {n} | {label} | {len(runs)} | {_pct(summarize([r[before] for r in runs]))} | "
                f"{_pct(summarize([r[after] for r in runs]))} | {100 * ci.mean:+.2f} "
                f"[{100 * ci.low:+.2f}, {100 * ci.high:+.2f}] |"
            )
    return "\n".join(lines) + "\n"


def default_table(src: Sources) -> str:
    """The default run (`make repro`, reports/metrics.json) beside its replicates' spread on
    each CPU (`DEFAULT_RUNS`, `SECOND_CPU_DEFAULT_RUNS`: the same params, other replicates)."""
    groups = [
        replicate_groups(src.records, spec) for spec in (DEFAULT_RUNS, SECOND_CPU_DEFAULT_RUNS)
    ]
    lines = [
        "| method | this run (reports/metrics.json) | replicates, mean ± sd (n), "
        f"{FIRST_CPU} | the same, {SECOND_CPU} |",
        "|---|---:|---:|---:|",
    ]
    for label, key in DEFAULT_METHODS:
        spreads = []
        for reps in groups:
            s = summarize([r.metrics.get(key) for r in reps])
            spreads.append(f"{_pct(s)} ({s.n})" if s.n else "–")
        value = src.metrics.get(key)
        lines.append(
            f"| {label} | {'–' if value is None else f'{100 * value:.2f}'} | "
            + " | ".join(spreads)
            + " |"
        )
    return "\n".join(lines) + "\n"


def grid_table(src: Sources) -> str:
    """The paper's grid on the CPU settings (`synapse-*`), as `fewsam report` writes it."""
    mine = [r for r in src.records if r.name.startswith(PAPER_PREFIX + "-")]
    rows = table_rows(mine, lambda r: r.cases, lambda r: r.budget)
    ablation = ablation_markdown(rows)
    return markdown(rows) + ("\n" + ablation if ablation else "")


TABLES: dict[str, Callable[[Sources], str]] = {
    "results": results_table,
    "default": default_table,
    "grid": grid_table,
    "selftrain": selftrain_table,
}


def pages(root: Path) -> list[Path]:
    out = [root / "README.md", root / "BENCHMARKS.md"]
    docs = root / "docs"
    if docs.is_dir():
        out += sorted(docs.rglob("*.md"))
    return [p for p in out if p.is_file()]


def render(text: str, src: Sources, where: Path) -> str:
    """`text` with every table block regenerated; an unknown table name is an error."""

    def sub(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in TABLES:
            raise InputError(where, f"unknown table `{name}` (known: {', '.join(TABLES)})")
        return m.group(1) + TABLES[name](src) + m.group(4)

    return BLOCK.sub(sub, text)


def update(root: Path, check: bool = False) -> list[Path]:
    """Regenerate the table blocks of README.md, BENCHMARKS.md and docs/; returns the pages whose blocks
    differed (and, unless `check`, were rewritten atomically)."""
    src = load_sources(root)
    stale = []
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        new = render(text, src, page)
        if new != text:
            stale.append(page)
            if not check:
                write_text(page, new)
    return stale
