"""Where the minutes of `make repro` go: every stage of dvc.yaml timed from an empty cache.

Clones the repository's HEAD into a temporary folder (so nothing is cached there), links this
checkout's `.venv` into it (the documented figure is "with the venv present"), then runs
`dvc repro --single-item <stage>` for each stage in pipeline order and times each. `-S key=value`
overrides params in the clone first, to measure a candidate default before adopting it. Prints a
table and writes a JSON record (`--out`); `--check` compares the clone's reports/metrics.json with
this checkout's committed one.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_repro.py --out reports/bench_repro.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_order(dvc_yaml: Path) -> list[str]:
    """Stages in an order where each comes after the stages whose outputs it reads."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    produced = {}
    for name, st in stages.items():
        for out in st.get("outs", []) + st.get("metrics", []) + st.get("plots", []):
            produced[next(iter(out)) if isinstance(out, dict) else out] = name
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for dep in stages[name].get("deps", []):
            for path, producer in produced.items():
                if producer != name and (dep == path or str(dep).startswith(path + "/")):
                    visit(producer)
        order.append(name)

    for name in stages:
        visit(name)
    return order


def set_param(params: dict, dotted: str, value: str) -> None:
    *head, last = dotted.split(".")
    node = params
    for key in head:
        node = node[key]
    node[last] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set", action="append", default=[], help="key=value in params")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_repro.json"))
    parser.add_argument("--check", action="store_true", help="compare metrics with the checkout's")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fewsam-repro-"))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
        (work / ".venv").symlink_to(ROOT / ".venv")
        if args.set:
            # Edit the values only: a YAML round trip would drop params.yaml's comments, which
            # does not matter in a throwaway clone.
            params = yaml.safe_load((work / "params.yaml").read_text())
            for item in args.set:
                key, value = item.split("=", 1)
                set_param(params, key, value)
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
        times: dict[str, float] = {}
        total = time.perf_counter()
        for stage in stage_order(work / "dvc.yaml"):
            start = time.perf_counter()
            subprocess.run(
                ["dvc", "repro", "--single-item", stage], cwd=work, env=env, check=True,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            times[stage] = time.perf_counter() - start
            print(f"{stage:12s} {times[stage]:7.1f} s", flush=True)
        wall = time.perf_counter() - total
        metrics = json.loads((work / "reports" / "metrics.json").read_text())
        record = {
            "command": "benchmarks/bench_repro.py " + " ".join(f"-S {s}" for s in args.set),
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip(),  # fmt: skip
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "stage_seconds": {k: round(v, 1) for k, v in times.items()},
            "total_seconds": round(wall, 1),
            "metrics": {k: v for k, v in metrics.items() if "dsc" in k and isinstance(v, float)},
        }
        print(f"{'total':12s} {wall:7.1f} s")
        for key, value in record["metrics"].items():
            print(f"{key:24s} {value:.6f}")
        if args.check:
            committed = json.loads((ROOT / "reports" / "metrics.json").read_text())
            record["same_as_committed"] = committed == metrics
            print("metrics equal to the committed ones:", record["same_as_committed"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
