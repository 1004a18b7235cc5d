"""A committed archive of finished experiments, so that a grid outlives the clone it ran in.

DVC keeps experiments as git refs of the repository they ran in; a fresh clone has none of them,
and a queue ended with its session leaves the rest undone. `fewsam report --archive FILE` merges
the finished experiments it sees into FILE (JSON, one record per experiment name, the newest
kept, with each record's per-case Dice so that paired differences need no commit, and its
training budget), and reports from the union; archives written before budgets were kept load
with none; `fewsam grid --missing --archive FILE` counts archived names as finished. Commit
the file, and a later session queues only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from core.atomic import write_text
from core.errors import InputError
from fewsam.exp_records import ExpRecord

VERSION = 1


def load(path: Path) -> list[ExpRecord]:
    """The records of an archive file; an absent file is an empty archive."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION or not isinstance(data.get("experiments"), list):
            raise ValueError(f"not a version {VERSION} experiment archive")
        return [ExpRecord(**item) for item in data["experiments"]]
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise InputError(path, f"cannot be read as an experiment archive ({e})") from None


def merge(
    archived: Sequence[ExpRecord],
    live: Sequence[ExpRecord],
    read_cases: Callable[[ExpRecord], dict[str, float] | None],
    read_budget: Callable[[ExpRecord], dict[str, list[float]] | None] | None = None,
) -> list[ExpRecord]:
    """Finished records of both, one per name (the newest), live ones given their per-case Dice
    and, with `read_budget`, their training budget, where they have none yet.

    Sorted by name, so that the archive file changes only where an experiment does.
    """
    newest: dict[str, ExpRecord] = {}
    for r in archived:
        newest[r.name] = r
    for r in live:
        if r.state != "success":
            continue
        if r.name in newest and newest[r.name].timestamp > r.timestamp:
            continue
        budget = r.budget or (read_budget(r) if read_budget is not None else None)
        newest[r.name] = dataclasses.replace(r, cases=r.cases or read_cases(r), budget=budget)
    return [newest[name] for name in sorted(newest)]


def save(path: Path, records: Sequence[ExpRecord]) -> None:
    """Write the archive (atomically), with sorted keys: stable diffs for a committed file."""
    data = {"version": VERSION, "experiments": [dataclasses.asdict(r) for r in records]}
    write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
