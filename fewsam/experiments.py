"""The paper's experiment grid as a DVC queue: exemplar counts x synthesis on/off, plus the full set.

Each grid point is one `dvc exp run --queue -n NAME -S exemplars=N -S synth.enabled=BOOL`, on top
of the workspace's params.yaml and any extra `-S` overrides (the same for every point). Every
evaluation also scores zero-shot SAM (`evaluate.zero_shot_prompts`: point and box prompts by
default), so the baselines come with the grid.

With `seeds` > 1 every point runs that many times, as replicates 0..seeds-1 (`-S replicate=r`,
names ending in `-s<r>`): the same data, split and evaluation prompts, other draws of the method.
With `ablation`, the points are the synthesis component ablation (`fewsam.ablation`) instead.
A queue that was cut short is completed with `missing`: points whose experiment finished (on any
commit) are skipped, the others queued again.

Queued experiments run in temporary copies of the repository (`.dvc/tmp/exps`): paths the pipeline
produces (the phantom data) are found there, but datasets and weights outside the repository must
be given as absolute paths (`dataset.root`, `model.checkpoint`).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import ParamsError
from core.params import Params, parse_params, read_params_file
from fewsam import exp_archive
from fewsam.ablation import ABLATION_KEYS, VARIANTS, overrides
from fewsam.exp_records import DvcError, ExpRecord, read_experiments, run_dvc

# Exemplar counts of the published protocol, per dataset family.
PROTOCOL_COUNTS: dict[str, tuple[int, ...]] = {
    "synapse": (1, 9, 18, 36),
    "brats": (75, 150, 450),
}
# The component ablation runs at the protocol's smallest counts (Synapse: 1 and 9 exemplars),
# where synthesis has the most to add.
ABLATION_POINTS = 2
# dataset.format -> the family whose protocol applies (nifti: none, give --dataset or counts).
FAMILY = {"synapse": "synapse", "synapse-npz": "synapse", "brats": "brats"}
# Keys every grid point sets itself; an extra override may not change them.
GRID_KEYS = ("exemplars", "synth.enabled", "replicate")


@dataclass(frozen=True)
class GridPoint:
    """One experiment: its DVC name and its `-S` overrides ("key=value")."""

    name: str
    overrides: tuple[str, ...]


def _replicated(points: list[GridPoint], seeds: int) -> list[GridPoint]:
    if seeds == 1:
        return points
    return [
        GridPoint(f"{p.name}-s{r}", (*p.overrides, f"replicate={r}"))
        for p in points
        for r in range(seeds)
    ]


def grid_points(
    counts: Sequence[int], prefix: str, seeds: int = 1, ablation: bool = False
) -> list[GridPoint]:
    """Each count with synthesis on and off, then the full set (`exemplars=all`, no synthesis);
    with `ablation`, each count with every variant of `fewsam.ablation.VARIANTS` instead. Each
    point `seeds` times (see the module docstring)."""
    points = []
    for n in counts:
        if ablation:
            for _, slug, on in VARIANTS:
                items = (f"exemplars={n}", "synth.enabled=true", *overrides(on))
                points.append(GridPoint(f"{prefix}-{n}-{slug}", items))
            continue
        for enabled in (True, False):
            tag = "synth" if enabled else "nosynth"
            items = (f"exemplars={n}", f"synth.enabled={str(enabled).lower()}")
            points.append(GridPoint(f"{prefix}-{n}-{tag}", items))
    if not ablation:
        points.append(GridPoint(f"{prefix}-all", ("exemplars=all", "synth.enabled=false")))
    return _replicated(points, seeds)


def parse_override(item: str) -> tuple[str, Any]:
    """Split `train.max_steps=20` into ("train.max_steps", 20); the value is read as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"--set {item!r}: expected KEY=VALUE")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ParamsError(f"--set {item!r}: value is not valid YAML") from None
    return key.strip(), value


def apply_overrides(data: dict[str, Any], items: Sequence[str]) -> dict[str, Any]:
    """A copy of params mapping `data` with the dotted-key overrides set (unknown keys fail)."""
    out = yaml.safe_load(yaml.safe_dump(data))
    for item in items:
        key, value = parse_override(item)
        *parents, leaf = key.split(".")
        node = out
        for i, part in enumerate(parents):
            if not isinstance(node.get(part), dict):
                raise ParamsError(f"--set {key}: no section {'.'.join(parents[: i + 1])}")
            node = node[part]
        if leaf not in node:
            raise ParamsError(f"--set {key}: unknown key")
        node[leaf] = value
    return out


def check_params(params_path: Path, extra: Sequence[str], ablation: bool = False) -> Params:
    """Validate the workspace params with the extra overrides and every grid point's keys.

    Catches a typo before a dozen experiments are queued and fail one after another.
    """
    fixed = (*GRID_KEYS, *ABLATION_KEYS) if ablation else GRID_KEYS
    for item in extra:
        if parse_override(item)[0] in fixed:
            raise ParamsError(f"--set {item}: the grid sets {', '.join(fixed)} itself")
    data = read_params_file(params_path)
    if not isinstance(data, dict):
        raise ParamsError(f"{params_path}: must be a mapping of sections")
    source = f"{params_path} with --set"
    params = parse_params(apply_overrides(data, extra), source)
    parse_params(apply_overrides(data, [*extra, "exemplars=all", "synth.enabled=false"]), source)
    return params


def protocol_counts(
    params: Params, dataset: str | None, counts: Sequence[int]
) -> tuple[str, tuple[int, ...]]:
    """(name prefix, exemplar counts): the counts given, else those of `dataset`'s protocol.

    `dataset` defaults to the family of `dataset.format`; naming another family than the params'
    dataset is an error (the grid would train on one dataset with another's protocol).
    """
    family = FAMILY.get(params.dataset.format)
    if dataset is not None and dataset not in PROTOCOL_COUNTS:
        raise ParamsError(f"--dataset {dataset}: must be one of {sorted(PROTOCOL_COUNTS)}")
    if dataset is not None and family is not None and family != dataset:
        raise ParamsError(
            f"--dataset {dataset} but dataset.format is {params.dataset.format}: add "
            f"--set dataset.format={dataset} --set dataset.root=/absolute/path/to/{dataset}"
        )
    name = dataset or family
    if counts:
        if any(n < 1 for n in counts):
            raise ParamsError(f"--exemplars {list(counts)}: counts must be >= 1")
        return name or "grid", tuple(sorted(set(counts)))
    if name is None:
        raise ParamsError(
            f"dataset.format {params.dataset.format} has no published protocol: "
            "give --dataset synapse|brats or --exemplars"
        )
    return name, PROTOCOL_COUNTS[name]


def queue_command(point: GridPoint, extra: Sequence[str], force: bool) -> list[str]:
    """The `dvc exp run --queue` arguments of one grid point."""
    args = ["exp", "run", "--queue", "-n", point.name]
    if force:
        args.append("--force")
    for item in (*point.overrides, *extra):
        args += ["-S", item]
    return args


# Experiment states that `missing` leaves alone (the others, failed or absent, are queued again).
_NOT_MISSING = ("success", "queued", "running")


def _best_states(records: Sequence[ExpRecord]) -> dict[str, str]:
    """Per experiment name, its most advanced state over all its records: a name re-run after a
    failure keeps the failed record beside the successful one, and the success must count."""
    rank = {state: i for i, state in enumerate(("failed", *reversed(_NOT_MISSING)))}
    states: dict[str, str] = {}
    for r in records:
        if r.name not in states or rank.get(r.state, -1) > rank.get(states[r.name], -1):
            states[r.name] = r.state
    return states


@dataclass(frozen=True)
class GridOptions:
    """How `run` queues: `seeds` replicates per point, the `ablation` points instead of the
    paper's, only the `missing` points, replacing taken names (`force`), running the queue to its
    end (`run_now`, `jobs` at once), or only printing the commands (`dry_run`); with `missing`,
    the experiments of an `archive` file (`fewsam.exp_archive`) count as finished too."""

    seeds: int = 1
    ablation: bool = False
    missing: bool = False
    force: bool = False
    run_now: bool = False
    jobs: int = 1
    dry_run: bool = False
    archive: Path | None = None


def _to_queue(
    root: Path, points: list[GridPoint], options: GridOptions, echo: Callable[[str], None]
) -> list[tuple[GridPoint, bool]]:
    """(point, replace its name) for each point to queue; raises on taken names unless allowed."""
    if options.missing:
        records = read_experiments(root, all_commits=True)
        if options.archive is not None:
            records = [*records, *exp_archive.load(options.archive)]
        states = _best_states(records)
        kept = [p.name for p in points if states.get(p.name) in _NOT_MISSING]
        if kept:
            echo(f"skipping {len(kept)} finished or queued experiments: {', '.join(kept)}")
        return [(p, p.name in states) for p in points if states.get(p.name) not in _NOT_MISSING]
    if not options.force:
        taken = {r.name for r in read_experiments(root)} & {p.name for p in points}
        if taken:
            raise DvcError(
                f"experiments {', '.join(sorted(taken))} exist on this commit: give another "
                "--prefix, --missing to queue only what is not finished, or --force to replace them"
            )
    return [(p, options.force) for p in points]


def run(
    root: Path,
    dataset: str | None,
    counts: Sequence[int],
    extra: Sequence[str],
    prefix: str | None = None,
    options: GridOptions = GridOptions(),
    echo: Callable[[str], None] = print,
) -> list[GridPoint]:
    """Queue the grid in the DVC project at `root`; with `options.run_now`, run it and wait.

    Raises DvcError when a grid name is taken (unless `force` or `missing`) or an experiment
    failed. The ablation's exemplar counts default to the protocol's ABLATION_POINTS smallest.
    """
    if options.seeds < 1:
        raise ParamsError(f"--seeds {options.seeds}: must be >= 1")
    params = check_params(root / "params.yaml", extra, options.ablation)
    family, grid_counts = protocol_counts(params, dataset, counts)
    if options.ablation and not counts:
        grid_counts = grid_counts[:ABLATION_POINTS]
    points = grid_points(grid_counts, prefix or family, options.seeds, options.ablation)
    if options.dry_run:
        for p in points:
            echo(shlex.join(["dvc", *queue_command(p, extra, options.force)]))
        return points
    queued = _to_queue(root, points, options, echo)
    commands = [queue_command(p, extra, replace) for p, replace in queued]
    points = [p for p, _ in queued]
    if not points:
        echo("nothing to queue: every experiment of the grid has finished")
        return points
    # Queued experiments belong to this commit; the check below finds them there even if the user
    # commits something else while the queue runs.
    baseline = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    for args in commands:
        run_dvc(args, root)
    if not options.run_now:
        echo(f"queued {len(points)} experiments; run them with `dvc exp run --run-all`")
        return points
    # `--run-all` follows every queued experiment to its end, but exits 0 even when one failed.
    run_dvc(["exp", "run", "--run-all", "--jobs", str(options.jobs)], root)
    states = _best_states(
        [r for r in read_experiments(root, all_commits=True) if r.baseline == baseline]
    )
    failed = [p.name for p in points if states.get(p.name) != "success"]
    if failed:
        raise DvcError(
            f"experiments did not finish: {', '.join(failed)} (see `dvc queue logs NAME`)"
        )
    echo(f"ran {len(points)} experiments; `fewsam report` collects them")
    return points
