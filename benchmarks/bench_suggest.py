"""Which slices to label: the suggestion strategies on the phantom, with a scripted annotator.

The phantom Synapse scans are copied into the layout a hospital team starts from (training scans
without labels, labeled test scans: `phantom.annotator.unlabeled_copy`). For each strategy, slice
count and seed, `fewsam synth suggest` picks the slices (it never sees a training label), the
annotator copies the ground truth into exactly those slices (`annotate_from_truth`), and the
pipeline runs through the `fewsam` command: extract (exemplars = the listed slices), synthesize,
train, infer, score. Round 2: on top of the `spread` 3-slice run of each seed, 3 more slices from
`uncertain` (with that run's adapter) against 6 `spread` slices from scratch.

    .venv/bin/python benchmarks/bench_suggest.py --work /tmp/bench_suggest [--jobs 2]
        [--strategies random spread diverse] [--counts 1 3 9] [--seeds 0 1 2] [--no-round2]
        [--set train.max_steps=300 ...]

Runs already in <work>/results.jsonl are skipped, so an interrupted benchmark continues. Prints a
Markdown table of mean ± sd DSC (prompt-free and prompted) over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# A shorter budget than the default pipeline, as the CPU grid of docs/experiments.md uses.
DEFAULT_SETS = (
    "synth.samples=1000",
    "train.max_steps=300",
    "train.warmup_steps=15",
    "evaluate.zero_shot_prompts=[]",
    "evaluate.overlays_per_case=0",
)
_LOCK = threading.Lock()


def fewsam(work: Path, params: Path, *args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run(
        [str(BIN / "fewsam"), *args, "-p", str(params)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fewsam {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def set_key(params: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"{dotted} is not a params key")
    node[leaf] = value


def make_params(run_dir: Path, scans: Path, seed: int, sets: Sequence[str]) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"] = seed
    params["exemplars"] = "all"
    params["dataset"].update(
        format="nifti", root=str(scans), annotations=str(run_dir / "annotate"), classes=[]
    )
    params["model"]["checkpoint"] = str(REPO / "models/base/tiny_sam.safetensors")
    return write_params(run_dir, params, sets)


def write_params(run_dir: Path, params: dict, sets: Sequence[str]) -> Path:
    """`run_dir`/params.yaml: `params` with each `key=value` of `sets` applied (YAML values)."""
    for item in sets:
        key, _, raw = item.partition("=")
        set_key(params, key, yaml.safe_load(raw))
    path = run_dir / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def pipeline(run_dir: Path, params: Path) -> dict[str, float]:
    """extract -> synthesize -> train -> infer -> score in `run_dir`; the headline metrics."""
    start = time.perf_counter()
    fewsam(run_dir, params, "synth", "extract", "--out", "exemplars.h5", "--csv", "exemplars.csv")
    fewsam(run_dir, params, "synth", "run", "--exemplars", "exemplars.h5", "--out", "synthetic.h5")
    fewsam(
        run_dir,
        params,
        "train",
        "run",
        "--data",
        "synthetic.h5",
        "--out",
        "adapter",
        "--log",
        "train_log.csv",
    )
    fewsam(run_dir, params, "evaluate", "infer", "--adapter", "adapter", "--out", "reports")
    fewsam(
        run_dir, params, "evaluate", "score", "--pred", "reports/predictions", "--out", "reports"
    )
    metrics = json.loads((run_dir / "reports" / "metrics.json").read_text())
    (run_dir / "synthetic.h5").unlink()  # the largest file; nothing reads it again
    return {
        "dsc_prompt_free": metrics["dsc_prompt_free"],
        "dsc": metrics["dsc"],
        "hd95_prompt_free": metrics["hd95_prompt_free"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def one_run(
    work: Path,
    scans: Path,
    synapse: Path,
    name: str,
    strategy: str,
    n: int,
    seed: int,
    sets: Sequence[str],
    base: str | None = None,
) -> dict[str, object]:
    """Suggest (on top of run `base` when given), annotate, run the pipeline."""
    from phantom.annotator import annotate_from_truth

    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    params = make_params(run_dir, scans, seed, sets)
    args = ["synth", "suggest", "--n", str(n), "--strategy", strategy, "--out", "annotate"]
    if base is not None:
        shutil.copytree(work / "runs" / base / "annotate", run_dir / "annotate")
        args += ["--adapter", str(work / "runs" / base / "adapter")]
    fewsam(run_dir, params, *args)
    annotate_from_truth(run_dir / "annotate", synapse)
    fewsam(run_dir, params, "data", "check")
    result = {"name": name, "strategy": strategy, "n": n, "seed": seed, "base": base}
    result.update(pipeline(run_dir, params))
    with _LOCK, (work / "results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return result


def summarize(results: list[dict]) -> str:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in results:
        label = r["strategy"] if r["base"] is None else f"spread 3 + {r['strategy']} 3"
        groups.setdefault((label, r["n"] if r["base"] is None else 6), []).append(r)

    def cell(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    lines = [
        "| strategy | slices labeled | DSC prompt-free | DSC prompted | n seeds | minutes per run |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (label, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        minutes = statistics.mean(r["seconds"] for r in rs) / 60
        lines.append(
            f"| {label} | {n} | {cell([r['dsc_prompt_free'] for r in rs])} | "
            f"{cell([r['dsc'] for r in rs])} | {len(rs)} | {minutes:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--strategies", nargs="+", default=["random", "spread", "diverse"])
    ap.add_argument("--counts", nargs="+", type=int, default=[1, 3, 9])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--no-round2", action="store_true")
    ap.add_argument("--set", action="append", default=[], help="extra params override key=value")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    sets = [*DEFAULT_SETS, *args.set]
    results_path = work / "results.jsonl"
    done = (
        [json.loads(x) for x in results_path.read_text().splitlines()]
        if results_path.exists()
        else []
    )
    if not args.summary_only:
        from phantom.annotator import unlabeled_copy

        phantom = work / "phantom"
        if not (phantom / "synapse").is_dir():
            params = make_params(work, work / "scans", 0, sets)
            fewsam(work, params, "data", "phantom", "--out", str(phantom))
        scans = work / "scans"
        if not (scans / "dataset.json").is_file():
            unlabeled_copy(phantom / "synapse", scans)
        names = {r["name"] for r in done}
        first = [
            (f"{s}-{n}-s{seed}", s, n, seed, None)
            for seed in args.seeds
            for n in args.counts
            for s in args.strategies
        ]
        second = []
        if not args.no_round2:
            second = [(f"spread-6-s{seed}", "spread", 6, seed, None) for seed in args.seeds]
            second += [
                (f"uncertain-3on3-s{seed}", "uncertain", 3, seed, f"spread-3-s{seed}")
                for seed in args.seeds
            ]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.jobs) as pool:
            for batch in (first, second):
                todo = [job for job in batch if job[0] not in names]
                futures = [
                    pool.submit(
                        one_run, work, scans, phantom / "synapse", name, s, n, seed, sets, base
                    )
                    for name, s, n, seed, base in todo
                ]
                done += [f.result() for f in futures]
        print(f"wall {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(
        f"`.venv/bin/python benchmarks/bench_suggest.py --work {args.work} --jobs {args.jobs}` on "
        f"{platform.machine()} ({os.cpu_count()} cores), overrides {' '.join(sets)}; "
        "phantom Synapse test cases, `transunet` protocol, mean ± sd over seeds."
    )
    print(summarize(done))


if __name__ == "__main__":
    main()
