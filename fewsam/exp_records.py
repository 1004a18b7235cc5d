"""What DVC knows about experiments, as flat records: runs `dvc` and reads `dvc exp show --json`.

DVC 3 writes a list of commits; each commit has `experiments`, each experiment an `executor`
(null for one run in the workspace, else a mapping with its `state`: queued, running, success,
failed) and `revs`, whose `data` holds `params` and `metrics` keyed by file:

    [{"rev": "<sha>", "name": "main", "data": {...}, "experiments": [
        {"name": "synapse-9-synth", "executor": {"state": "success", ...},
         "revs": [{"rev": "<sha>", "name": "synapse-9-synth", "error": null,
                   "data": {"timestamp": "2025-01-01T12:00:00",
                            "params": {"params.yaml": {"data": {...}}},
                            "metrics": {"reports/metrics.json": {"data": {...}}}}}]}]}]

Anything else (the workspace row, missing or failed files) is skipped, not guessed at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import FewsamError

PARAMS_FILE = "params.yaml"
METRICS_FILE = "metrics.json"


class DvcError(FewsamError):
    """A DVC command failed, is missing, or said something this module cannot read."""


@dataclass(frozen=True)
class ExpRecord:
    """One experiment: `state` is success | failed | queued | running (DVC's executor states)."""

    name: str
    rev: str
    baseline: str
    state: str
    timestamp: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Per test case, the headline Dice (mean over classes), kept with archived records
    # (`fewsam.exp_archive`) whose commits may be gone; None: read it from the commit.
    cases: dict[str, float] | None = None
    # Training budget per model, [steps, seconds] ("adapter": fewsam's, from
    # reports/train_log.csv; "unet": the baseline's, from reports/baseline_log.csv), kept with
    # archived records like `cases`; None: read it from the commit.
    budget: dict[str, list[float]] | None = None


def dvc_env() -> dict[str, str]:
    """The environment for DVC: this interpreter's scripts first on PATH, so that the queue
    workers DVC starts find `fewsam` even when the virtual environment is not activated, and
    the current directory first on PYTHONPATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # A queued experiment runs in its own copy of the repository (.dvc/tmp/exps): "." first on
    # the import path makes it run that copy's code, the code it was queued with, also under an
    # editable install, which would otherwise import the live working tree.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (".", env.get("PYTHONPATH", "")) if p)
    return env


def run_dvc(args: Sequence[str], cwd: Path, capture: bool = False) -> str:
    """Run `dvc ARGS` in `cwd`; its stdout when `capture`, else it streams to the terminal."""
    env = dvc_env()
    exe = shutil.which("dvc", path=env["PATH"])
    if exe is None:
        raise DvcError("dvc: not found (install the project, or activate its environment)")
    done = subprocess.run(
        [exe, *args], cwd=cwd, env=env, text=True, capture_output=capture, check=False
    )
    if done.returncode != 0:
        # Captured: DVC's last line says why. Streamed: it is already on the terminal.
        last = (done.stderr or "").strip().splitlines()[-1:] if capture else []
        why = f": {last[0]}" if last else ""
        raise DvcError(f"`dvc {' '.join(args)}` failed (exit {done.returncode}){why}")
    return done.stdout if capture else ""


def _file_data(files: Any, wanted: str) -> dict[str, Any]:
    """The `data` of the file named `wanted` (or ending in it) in a params/metrics mapping."""
    if not isinstance(files, dict):
        return {}
    for path, entry in sorted(files.items()):
        if (path == wanted or path.endswith("/" + wanted)) and isinstance(entry, dict):
            data = entry.get("data")
            return data if isinstance(data, dict) else {}
    return {}


def _record(exp: dict[str, Any], baseline: str) -> ExpRecord | None:
    revs = exp.get("revs")
    if not isinstance(revs, list) or not revs or not isinstance(revs[0], dict):
        return None
    rev = revs[0]
    executor = exp.get("executor")
    state = executor.get("state") if isinstance(executor, dict) else None
    if rev.get("error"):
        state = "failed"
    data = rev.get("data") if isinstance(rev.get("data"), dict) else {}
    return ExpRecord(
        name=str(exp.get("name") or rev.get("name") or str(rev.get("rev", ""))[:7]),
        rev=str(rev.get("rev", "")),
        baseline=baseline,
        # No executor: the experiment ran in the workspace and was committed, so it finished.
        state=str(state or "success"),
        timestamp=str(data.get("timestamp") or ""),
        params=_file_data(data.get("params"), PARAMS_FILE),
        metrics=_file_data(data.get("metrics"), METRICS_FILE),
    )


def parse_show(data: Any) -> list[ExpRecord]:
    """Records of every experiment in parsed `dvc exp show --json` output, in DVC's order."""
    if not isinstance(data, list):
        raise DvcError("`dvc exp show --json`: expected a list of commits")
    records = []
    for commit in data:
        if not isinstance(commit, dict):
            continue
        for exp in commit.get("experiments") or []:
            record = _record(exp, str(commit.get("rev", ""))) if isinstance(exp, dict) else None
            if record is not None:
                records.append(record)
    return records


def read_experiments(cwd: Path, all_commits: bool = False) -> list[ExpRecord]:
    """Records of the experiments of the current commit (of every commit with `all_commits`)."""
    args = ["exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    text = run_dvc(args, cwd, capture=True)
    try:
        return parse_show(json.loads(text))
    except json.JSONDecodeError as e:
        raise DvcError(f"`dvc exp show --json`: not JSON ({e})") from None


def file_at(root: Path, rev: str, path: str) -> str | None:
    """The text of `path` at git revision `rev` (an experiment's commit), None when it has none.

    Files a stage writes with `cache: false` (reports/per_case.csv, the training logs) are
    committed with the experiment, so they can be read back after its workspace copy is gone.
    """
    done = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None
