"""Training on SAM's box drafts: what labels drafted from one box per organ, never corrected,
cost in model quality against the same slices labeled exactly.

On the default phantom (`fewsam data phantom`, params.yaml's `phantom:` section), copied without
training labels (`phantom.annotator.unlabeled_copy`), `suggest.run` picks n slices (`diverse`,
the default strategy) once per n; the picked folder is copied into one annotation folder per
label kind, so every kind labels the same slices:

- `exact`: `phantom.annotator.annotate_from_truth` copies the ground truth (empty slices are
  marked negative);
- `base` / `litemedsam` (box drafts): for every listed slice and every class present in its
  truth, the class's tight box (first and last truth column and row) prompts the engine
  (`annotate.engines.open_engine`) on the slice as `annotate.session.Session.image` gives it;
  the masks are assembled into one label map (`evaluate.zero_shot.assemble`: the higher
  predicted IoU wins where masks overlap) and saved through `Session.save`, as the page saves a
  slice nobody corrects (a slice with no class is saved as a negative).

The drafts are scored against the truth on the labeled slices (Dice per organ, pixels pooled
over the slices, mean over the organs present). Then, per (n, kind, replicate), through the
`fewsam` command with a params file per run: `data check` (must be clean), extract
(`exemplars: all`), synthesize, train, baseline (U-Net), infer, score. Everything else is
params.yaml's, with the CPU grid settings below unless `--set` overrides them.

    .venv/bin/python benchmarks/bench_drafted_labels.py --out /tmp/bdl --slices 3 9 \
        --replicates 1 [--kinds exact base litemedsam] [--set key=value ...]

Runs already in <out>/results.jsonl are skipped, so a second call with `--slices 9
--replicates 3` adds replicates 1 and 2 at 9 slices. Prints a Markdown table and writes
<out>/record.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASE = REPO / "models" / "base" / "tiny_sam.safetensors"
KINDS = ("exact", "base", "litemedsam")
# The CPU grid settings of docs/experiments.md (BENCHMARKS.md, *What SAM adds*).
DEFAULT_SETS = (
    "train.max_steps=300",
    "train.warmup_steps=15",
    "synth.samples=1000",
    "evaluate.max_cases=6",
)


def set_key(params: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"{dotted} is not a params key")
    node[leaf] = value


def write_params(
    path: Path, scans: Path, annotations: Path, replicate: int, sets: Sequence[str]
) -> Path:
    """params.yaml's defaults, the phantom's unlabeled copy as a nifti dataset, `sets` applied."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["exemplars"] = "all"
    params["replicate"] = replicate
    params["dataset"].update(
        format="nifti", root=str(scans), annotations=str(annotations), classes=[]
    )
    params["model"]["checkpoint"] = str(BASE)
    for item in sets:
        key, _, raw = item.partition("=")
        set_key(params, key, yaml.safe_load(raw))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def fewsam(cwd: Path, params: Path, *args: str) -> tuple[str, float]:
    """Run `fewsam ARGS -p params` in `cwd`; its stdout and wall seconds; raises on failure."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "fewsam"), *args, "-p", str(params)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fewsam {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout, round(time.perf_counter() - start, 1)


# ---- labels ----


def draft(folder: Path, truth_folder: Path, params_path: Path, kind: str) -> dict[str, object]:
    """Box drafts of `kind` into `folder` (a copy of the suggested folder), prompted from the
    truth in `truth_folder` (the same rows, labeled exactly); returns timing and counts."""
    from annotate.engines import Prompt, open_engine
    from annotate.session import Session
    from core.params import load_params
    from evaluate.zero_shot import assemble
    from synth.datasets import open_dataset

    params = load_params(params_path)
    reader = open_dataset(params.dataset, params.seed)
    k = len(reader.classes)
    engine = open_engine(kind, "tiny", str(BASE), 256, k)
    session, truth = Session(reader, folder, engine), Session(reader, truth_folder, engine)
    embed_s = prompt_s = 0.0
    prompts = empty = 0
    try:
        for i in range(len(session.rows())):
            gt, _ = truth.label(i)
            classes = [c for c in range(1, k + 1) if (gt == c).any()]
            plane = np.zeros_like(gt)
            if classes:
                t0 = time.perf_counter()
                emb = engine.embed(session.image(i))
                t1 = time.perf_counter()
                masks, scores = [], []
                for c in classes:
                    rows, cols = np.nonzero(gt == c)
                    box = (cols.min(), rows.min(), cols.max(), rows.max())
                    answer = engine.predict(emb, Prompt(c, box=tuple(map(float, box))), None)
                    masks.append(answer.mask)
                    scores.append(answer.score)
                    empty += int(not answer.mask.any())
                prompt_s += time.perf_counter() - t1
                embed_s += t1 - t0
                prompts += len(classes)
                plane = assemble(np.stack(masks), np.asarray(scores), np.asarray(classes))
            etag = session.label(i)[1]
            session.save(i, plane, etag, negative=not plane.any())
    finally:
        session.close()
        truth.close()
    return {
        "engine": engine.name,
        "embed_s": round(embed_s, 2),
        "prompt_s": round(prompt_s, 2),
        "prompts": prompts,
        "empty_masks": empty,
    }


def draft_dice(folder: Path, truth_folder: Path, params_path: Path) -> dict[str, object]:
    """Dice of `folder`'s labels against `truth_folder`'s on the listed slices: per organ,
    pixels pooled over the slices; `mean` over the organs present in the truth."""
    from annotate.engines import Embedding
    from annotate.session import Session
    from core.params import load_params
    from synth.datasets import open_dataset

    class NoEngine:  # the sessions only read labels here
        name = "none"

        def embed(self, image: np.ndarray) -> Embedding:
            raise AssertionError("no embedding needed")

        def predict(self, emb: object, prompt: object, mask_input: object) -> object:
            raise AssertionError("no prompt needed")

    params = load_params(params_path)
    reader = open_dataset(params.dataset, params.seed)
    names = list(reader.classes)
    labels, truth = Session(reader, folder, NoEngine()), Session(reader, truth_folder, NoEngine())
    inter = np.zeros(len(names) + 1)
    pred_n = np.zeros(len(names) + 1)
    gt_n = np.zeros(len(names) + 1)
    try:
        for i in range(len(labels.rows())):
            p, g = labels.label(i)[0], truth.label(i)[0]
            for c in range(1, len(names) + 1):
                inter[c] += np.sum((p == c) & (g == c))
                pred_n[c] += np.sum(p == c)
                gt_n[c] += np.sum(g == c)
    finally:
        labels.close()
        truth.close()
    per_class = {
        names[c - 1]: round(float(2 * inter[c] / (pred_n[c] + gt_n[c])), 4)
        for c in range(1, len(names) + 1)
        if gt_n[c] > 0
    }
    return {
        "mean": round(float(np.mean(list(per_class.values()))), 4) if per_class else None,
        "per_class": per_class,
    }


def prepare_labels(
    out: Path, scans: Path, synapse: Path, n: int, kinds: Sequence[str], sets: Sequence[str]
) -> dict[str, dict[str, object]]:
    """Suggest n slices once, then one annotation folder per kind; draft stats per kind."""
    from core.params import load_params
    from phantom.annotator import annotate_from_truth
    from suggest import run as suggest

    stats_path = out / "annotations" / f"n{n}" / "labels.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
        if all(k in stats for k in kinds):
            return stats
    base_dir = out / "annotations" / f"n{n}"
    picked = base_dir / "suggested"
    params_path = write_params(base_dir / "params.yaml", scans, picked, 0, sets)
    if not picked.is_dir():
        t0 = time.perf_counter()
        suggest.run(load_params(params_path), picked, n, "diverse")
        print(f"suggest n={n}: {time.perf_counter() - t0:.0f} s", flush=True)
    exact = base_dir / "exact"
    if not exact.is_dir():
        shutil.copytree(picked, exact)
        annotate_from_truth(exact, synapse)
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    for kind in kinds:
        if kind in stats:
            continue
        folder = base_dir / kind
        info: dict[str, object] = {"engine": "ground truth"}
        if kind != "exact":
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(picked, folder)
            info = draft(folder, exact, params_path, kind)
        info["dice"] = draft_dice(folder, exact, params_path)
        rows = (folder / "slices.csv").read_text().splitlines()
        info["slices"] = len(rows) - 1
        stats[kind] = info
        print(f"labels n={n} {kind}: {json.dumps(info)}", flush=True)
        stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats


# ---- runs ----


def one_run(
    out: Path, scans: Path, n: int, kind: str, replicate: int, sets: Sequence[str]
) -> dict[str, object]:
    """data check, then extract -> synthesize -> train -> baseline -> infer -> score."""
    name = f"{kind}-n{n}-r{replicate}"
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    folder = out / "annotations" / f"n{n}" / kind
    params = write_params(run_dir / "params.yaml", scans, folder, replicate, sets)
    check, _ = fewsam(run_dir, params, "data", "check")
    if "no problems" not in check:
        raise RuntimeError(f"data check of {folder} is not clean:\n{check}")
    steps = [
        ("extract", "synth extract --out exemplars.h5 --csv exemplars.csv"),
        ("synthesize", "synth run --exemplars exemplars.h5 --out synthetic.h5"),
        ("train", "train run --data synthetic.h5 --out adapter --log train_log.csv"),
        ("baseline", "train baseline --data synthetic.h5 --out unet --log baseline_log.csv"),
        ("infer", "evaluate infer --adapter adapter --unet unet --out reports"),
        ("score", "evaluate score --pred reports/predictions --out reports"),
    ]
    seconds: dict[str, float] = {}
    for stage, command in steps:
        stdout, seconds[stage] = fewsam(run_dir, params, *command.split())
        (run_dir / f"{stage}.txt").write_text(stdout)
    metrics = json.loads((run_dir / "reports" / "metrics.json").read_text())
    (run_dir / "synthetic.h5").unlink()  # the largest file; nothing reads it again
    shutil.rmtree(run_dir / "reports" / "predictions", ignore_errors=True)
    keys = ("dsc_prompt_free", "dsc", "unet_dsc", "zero_shot_dsc", "zero_shot_box_dsc")
    result: dict[str, object] = {"name": name, "n": n, "kind": kind, "replicate": replicate}
    result.update({k: metrics.get(k) for k in (*keys, "hd95_prompt_free", "unet_hd95")})
    result["cases"] = metrics.get("cases")
    result["seconds"] = seconds
    result["total_s"] = round(sum(seconds.values()), 1)
    with (out / "results.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return result


def per_class(run_dir: Path) -> dict[str, dict[str, float]] | None:
    """Dice per organ of the adapted model (prompt-free) and the U-Net, from metrics.json."""
    path = run_dir / "reports" / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    found = {
        "fewsam_prompt_free": metrics["adapted"]["prompt_free"]["per_class"],
        "unet": metrics.get("methods", {}).get("unet", {}).get("per_class", {}),
    }
    return {m: {c: round(v["dice"], 4) for c, v in d.items()} for m, d in found.items()}


def table(results: list[dict], labels: dict[int, dict]) -> str:
    def cell(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    lines = [
        "| slices | labels | draft Dice vs truth | fewsam prompt-free DSC | U-Net DSC | "
        "fewsam prompted DSC | replicates | minutes per run |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["n"], r["kind"]), []).append(r)
    order = {k: i for i, k in enumerate(KINDS)}
    for (n, kind), rs in sorted(groups.items(), key=lambda g: (g[0][0], order[g[0][1]])):
        rs = sorted(rs, key=lambda r: r["replicate"])
        dice = labels.get(n, {}).get(kind, {}).get("dice", {}).get("mean")
        label = "exact" if kind == "exact" else f"box draft ({kind})"
        minutes = statistics.mean(r["total_s"] for r in rs) / 60
        lines.append(
            f"| {n} | {label} | {'-' if dice is None else f'{dice:.3f}'} | "
            f"{cell([r['dsc_prompt_free'] for r in rs])} | {cell([r['unet_dsc'] for r in rs])} | "
            f"{cell([r['dsc'] for r in rs])} | {len(rs)} | {minutes:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--slices", nargs="+", type=int, default=[3, 9])
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=["exact", "base"])
    ap.add_argument("--replicates", type=int, default=1, help="replicates 0..R-1 per cell")
    ap.add_argument("--set", action="append", default=[], help="extra params override key=value")
    ap.add_argument("--labels-only", action="store_true", help="drafts and their Dice only")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    sets = [*DEFAULT_SETS, *args.set]
    t_start = time.perf_counter()

    from phantom.annotator import unlabeled_copy

    phantom, scans = out / "ph", out / "scans"
    if not (phantom / "synapse").is_dir():
        fewsam(out, REPO / "params.yaml", "data", "phantom", "--out", str(phantom))
    if not (scans / "dataset.json").is_file():
        unlabeled_copy(phantom / "synapse", scans)
    synapse = phantom / "synapse"
    labels = {n: prepare_labels(out, scans, synapse, n, args.kinds, sets) for n in args.slices}

    results_path = out / "results.jsonl"
    done = []
    if results_path.exists():
        done = [json.loads(x) for x in results_path.read_text().splitlines()]
    names = {r["name"] for r in done}
    if not args.labels_only:
        for replicate in range(args.replicates):
            for n in args.slices:
                for kind in args.kinds:
                    if f"{kind}-n{n}-r{replicate}" not in names:
                        done.append(one_run(out, scans, n, kind, replicate, sets))
    wanted = [r for r in done if r["n"] in args.slices and r["kind"] in args.kinds]
    for r in wanted:
        r["per_class"] = per_class(out / "runs" / r["name"])
    shown = table(wanted, labels)
    record = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "overrides": sets,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "labels": {str(n): v for n, v in labels.items()},
        "runs": wanted,
        "table": shown,
    }
    (out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{record['command']} ({record['machine']}), overrides {' '.join(sets)}; "
        "phantom Synapse test cases, transunet protocol, mean DSC over the 8 organs"
    )
    print(shown)


if __name__ == "__main__":
    main()
