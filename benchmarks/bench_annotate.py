"""Labeling with SAM (`fewsam annotate`): how fast each engine answers and how many
interactions a scripted annotator needs on the phantom.

Data: the default phantom (params.yaml's `phantom:` section, `phantom.generate.run`), copied
without training labels (`phantom.annotator.unlabeled_copy`). Round 1: `suggest.run` picks 9
slices (`diverse`, the default strategy), the scripted annotator copies their truth
(`phantom.annotator.annotate_from_truth`) and, for the adapter engine, an adapter is trained on
them through the `fewsam` command (data check, extract, synthesize, train; the CPU grid budget
below). Round 2, the measured slices: per seed, on a copy of the round-1 folder, `suggest.run`
with strategy `random` and that seed adds `--n` slices (never a round-1 slice, so the adapter is
never measured on a slice it was trained on); the annotator copies their truth. Truth and
images are read through `annotate.session.Session`, as the page reads them.

Per engine (`annotate.engines.open_engine`) and measured slice: one `embed` (timed; one untimed
warm-up embed per engine first), then per class present in the truth:

- box draft: the class's tight box (first and last truth column and row) alone; Dice and IoU
  against the class's truth;
- clicks (NoC): after the box (interaction 1), each further interaction adds a click at the
  most interior pixel (`evaluate.zero_shot.interior_point`) of the largest connected component
  (scipy.ndimage.label, 4-connected) of the false negatives or of the false positives, whichever
  is larger (false negatives on a tie), positive on a false negative, negative on a false
  positive; the prompt is the box and every click so far, with the previous answer's low-res
  logits as mask input (SAM engines; the adapter engine ignores it). NoC@t is the first
  interaction whose IoU reaches t, 20 when none of 20 does; a run stops once IoU reaches 0.90.
  `--no-mask-input` sends no previous logits (the page's `mask_input: false`).

Every `predict` call is timed (box and clicks alike). No assertion is made on time.

    .venv/bin/python benchmarks/bench_annotate.py --work /tmp/bench_annotate \
        [--engines base litemedsam adapter] [--seeds 0 1 2] [--n 9] \
        [--limit litemedsam=12] [--adapter PATH] [--threads 2] [--no-mask-input] \
        [--json /tmp/bench_annotate.json]

The phantom, the folders and the adapter are kept in --work and reused by a second call.
Prints Markdown tables and writes the JSON record (sort_keys).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BASE = REPO / "models" / "base" / "tiny_sam.safetensors"
ENGINES = ("base", "litemedsam", "adapter")
MAX_INTERACTIONS = 20
TARGETS = (0.85, 0.90)
ROUND1_N = 9
# The CPU grid settings of docs/experiments.md (BENCHMARKS.md, *What SAM adds*) for the round-1 adapter.
ADAPTER_SETS = (
    "train.max_steps=300",
    "train.warmup_steps=15",
    "synth.samples=1000",
)


# ---- data ----


def params_dict(scans: Path, annotations: Path, sets: Sequence[str] = ()) -> dict:
    """params.yaml's defaults with the unlabeled copy as a nifti dataset and `sets` applied."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["exemplars"] = "all"
    params["dataset"].update(
        format="nifti", root=str(scans), annotations=str(annotations), classes=[]
    )
    params["model"]["checkpoint"] = str(BASE)
    for item in sets:
        key, _, raw = item.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"{key} is not a params key")
        node[leaf] = yaml.safe_load(raw)
    return params


def fewsam(cwd: Path, params: Path, *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "fewsam"), *args, "-p", str(params)], cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"fewsam {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare(work: Path, seeds: Sequence[int], n: int) -> tuple[Path, Path, dict[int, Path]]:
    """Phantom, unlabeled copy, round-1 folder (labeled), one round-2 folder per seed."""
    from core.params import parse_params
    from phantom import generate
    from phantom.annotator import annotate_from_truth, unlabeled_copy
    from suggest import run as suggest

    phantom, scans, round1 = work / "ph", work / "scans", work / "round1"
    if not (phantom / "synapse").is_dir():
        defaults = yaml.safe_load((REPO / "params.yaml").read_text())
        generate.run(parse_params(defaults, "params.yaml"), phantom)
    if not (scans / "dataset.json").is_file():
        unlabeled_copy(phantom / "synapse", scans)
    if not (round1 / "slices.csv").is_file():
        shutil.rmtree(round1, ignore_errors=True)
        suggest.run(parse_params(params_dict(scans, round1)), round1, ROUND1_N, "diverse")
        annotate_from_truth(round1, phantom / "synapse")
    folders = {}
    for seed in seeds:
        folder = work / f"round2-n{n}-seed{seed}"
        if not (folder / "done").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(round1, folder)
            suggest.run(parse_params(params_dict(scans, folder)), folder, n, "random", seed=seed)
            annotate_from_truth(folder, phantom / "synapse")
            (folder / "done").write_text("")
        folders[seed] = folder
    return scans, round1, folders


def train_adapter(work: Path, scans: Path, round1: Path) -> tuple[Path, float]:
    """The round-1 adapter (kept in work/adapter_run/adapter); its training seconds (0 if kept)."""
    run_dir = work / "adapter_run"
    adapter = run_dir / "adapter"
    if (adapter / "config.json").is_file():
        return adapter, 0.0
    run_dir.mkdir(parents=True, exist_ok=True)
    params = run_dir / "params.yaml"
    params.write_text(yaml.safe_dump(params_dict(scans, round1, ADAPTER_SETS), sort_keys=False))
    start = time.perf_counter()
    check = fewsam(run_dir, params, "data", "check")
    if "no problems" not in check:
        raise RuntimeError(f"data check of {round1} is not clean:\n{check}")
    fewsam(run_dir, params, "synth", "extract", "--out", "exemplars.h5", "--csv", "ex.csv")
    fewsam(run_dir, params, "synth", "run", "--exemplars", "exemplars.h5", "--out", "syn.h5")
    fewsam(run_dir, params, "train", "run", "--data", "syn.h5", "--out", "adapter",
           "--log", "train_log.csv")  # fmt: skip
    (run_dir / "syn.h5").unlink()
    return adapter, time.perf_counter() - start


@dataclass
class Slice:
    seed: int
    case: str
    z: int  # axial index in the `core.volume` orientation
    image: np.ndarray  # C x H x W float32 in [0, 1]
    truth: np.ndarray  # H x W uint8 class ids


def load_slices(scans: Path, folders: dict[int, Path]) -> tuple[list[Slice], list[str]]:
    """The round-2 slices of every seed, image and truth as `Session` reads them."""
    from annotate.engines import Embedding
    from annotate.session import Session
    from core.params import parse_params
    from synth.datasets import open_dataset

    class NoEngine:  # the session only reads images and labels here
        name = "none"

        def embed(self, image: np.ndarray) -> Embedding:
            raise AssertionError("no embedding here")

        def predict(self, emb: object, prompt: object, mask_input: object) -> object:
            raise AssertionError("no prompt here")

    out: list[Slice] = []
    classes: list[str] = []
    for seed, folder in folders.items():
        params = parse_params(params_dict(scans, folder))
        reader = open_dataset(params.dataset, params.seed)
        classes = list(reader.classes)
        session = Session(reader, folder, NoEngine())
        try:
            for info in session.slices():
                if info.row.round != 2:
                    continue
                truth, _ = session.label(info.id)
                out.append(Slice(seed, info.row.case, info.z, session.image(info.id), truth))
        finally:
            session.close()
    return out, classes


# ---- the scripted annotator ----


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / total) if total else 1.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of H x W bool `mask` (all False when empty)."""
    from scipy import ndimage

    parts, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(parts.ravel())[1:]
    return parts == int(np.argmax(sizes)) + 1


def next_click(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, int] | None:
    """(x, y, 1|0) at the most interior pixel of the largest error region; None when no error."""
    from evaluate.zero_shot import interior_point

    fn = largest_component(truth & ~pred)
    fp = largest_component(pred & ~truth)
    if not fn.any() and not fp.any():
        return None
    region, label = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
    row, col = interior_point(region)
    return float(col), float(row), label


def tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())


def noc(ious: Sequence[float], target: float) -> int:
    """First interaction (1-based) whose IoU reaches `target`, MAX_INTERACTIONS when none does."""
    for k, value in enumerate(ious, start=1):
        if value >= target:
            return k
    return MAX_INTERACTIONS


@dataclass
class EngineRun:
    engine: str
    embed_s: list[float] = field(default_factory=list)
    prompt_s: list[float] = field(default_factory=list)
    instances: list[dict] = field(default_factory=list)
    slices: int = 0


def measure(
    kind: str, adapter: Path | None, slices: Sequence[Slice], k: int, mask_input: bool = True
) -> EngineRun:
    """Embed, box draft and click series of every class present on every slice; `mask_input`
    False sends no previous logits with the clicks (the page's `mask_input: false`)."""
    from annotate.engines import Prompt, open_engine

    engine = open_engine(kind, "tiny", str(BASE), 256, k, adapter)
    engine.embed(slices[0].image)  # warm-up, not timed
    run = EngineRun(engine.name, slices=len(slices))

    def predict(emb, prompt, mask_input):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        answer = engine.predict(emb, prompt, mask_input)
        run.prompt_s.append(time.perf_counter() - t0)
        return answer

    for i, s in enumerate(slices):
        t0 = time.perf_counter()
        emb = engine.embed(s.image)
        run.embed_s.append(time.perf_counter() - t0)
        for cls in range(1, k + 1):
            truth = s.truth == cls
            if not truth.any():
                continue
            box = tight_box(truth)
            answer = predict(emb, Prompt(cls, box=box), None)
            ious = [iou(answer.mask, truth)]
            first_dice = dice(answer.mask, truth)
            points: list[tuple[float, float, int]] = []
            while len(ious) < MAX_INTERACTIONS and ious[-1] < max(TARGETS):
                click = next_click(answer.mask, truth)
                if click is None:
                    break
                points.append(click)
                previous = answer.logits if mask_input else None
                answer = predict(emb, Prompt(cls, box=box, points=tuple(points)), previous)
                ious.append(iou(answer.mask, truth))
            run.instances.append(
                {
                    "seed": s.seed,
                    "case": s.case,
                    "z": s.z,
                    "cls": cls,
                    "pixels": int(truth.sum()),
                    "box_dice": round(first_dice, 4),
                    "ious": [round(v, 4) for v in ious],
                    **{f"noc{round(t * 100)}": noc(ious, t) for t in TARGETS},
                }
            )
        print(f"  {kind}: slice {i + 1}/{len(slices)} done", flush=True)
    return run


# ---- summary ----


def summarize(run: EngineRun, classes: Sequence[str]) -> dict:
    def stats(values: Sequence[float]) -> dict:
        a = np.asarray(values)
        return {
            "count": len(a),
            "median": round(float(np.median(a)), 5),
            "p90": round(float(np.percentile(a, 90)), 5),
            "mean": round(float(a.mean()), 5),
        }

    per_class = {}
    for cls, name in enumerate(classes, start=1):
        rows = [r for r in run.instances if r["cls"] == cls]
        if not rows:
            continue
        entry: dict[str, object] = {
            "instances": len(rows),
            "median_pixels": float(np.median([r["pixels"] for r in rows])),
            "box_dice": round(float(np.mean([r["box_dice"] for r in rows])), 4),
        }
        for t in TARGETS:
            key = f"noc{round(t * 100)}"
            entry[key] = round(float(np.mean([r[key] for r in rows])), 2)
            entry[f"{key}_reached"] = round(float(np.mean([max(r["ious"]) >= t for r in rows])), 4)
        per_class[name] = entry
    rows = run.instances
    overall: dict[str, object] = {
        "instances": len(rows),
        # the mask vanished after a click (IoU 0) although the box draft overlapped the truth
        "lost_after_click": sum(
            1 for r in rows if r["ious"][0] > 0 and min(r["ious"][1:] or [1]) == 0
        ),
        "box_dice_mean_over_classes": round(
            float(np.mean([c["box_dice"] for c in per_class.values()])), 4
        ),
        # IoU of the box draft, the best and the last of each series (means over instances)
        "iou_box": round(float(np.mean([r["ious"][0] for r in rows])), 4),
        "iou_best": round(float(np.mean([max(r["ious"]) for r in rows])), 4),
        "iou_last": round(float(np.mean([r["ious"][-1] for r in rows])), 4),
    }
    steps = np.concatenate([np.diff(r["ious"]) for r in rows]) if rows else np.zeros(0)
    overall["clicks"] = len(steps)
    overall["clicks_raising_iou"] = round(float(np.mean(steps > 0)), 4) if len(steps) else None
    overall["clicks_lowering_iou"] = round(float(np.mean(steps < 0)), 4) if len(steps) else None
    for t in TARGETS:
        key = f"noc{round(t * 100)}"
        overall[key] = round(float(np.mean([r[key] for r in rows])), 2)
        overall[f"{key}_reached"] = round(float(np.mean([max(r["ious"]) >= t for r in rows])), 4)
    return {
        "engine": run.engine,
        "slices": run.slices,
        "embed_s": stats(run.embed_s),
        "prompt_s": stats(run.prompt_s),
        "per_class": per_class,
        "overall": overall,
    }


def tables(summary: dict[str, dict], classes: Sequence[str]) -> str:
    kinds = list(summary)
    out = [
        "| engine | slices | embed median (s) | embed p90 (s) | prompts | prompt median (ms) "
        "| prompt p90 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        s = summary[kind]
        e, p = s["embed_s"], s["prompt_s"]
        out.append(
            f"| {s['engine']} | {s['slices']} | {e['median']:.3f} | {e['p90']:.3f} | "
            f"{p['count']} | {p['median'] * 1000:.1f} | {p['p90'] * 1000:.1f} |"
        )
    out += [
        "",
        "Box-only draft, Dice per class (mean over the slices where the class is present):",
        "",
    ]
    out.append("| class | median px | " + " | ".join(f"{k} (n)" for k in kinds) + " |")
    out.append("|---|---:|" + "---:|" * len(kinds))
    first = summary[kinds[0]]["per_class"]
    for name in [*classes, "mean over classes"]:
        px = f"{first[name]['median_pixels']:.0f}" if name in first else ""
        cells = [px]
        for kind in kinds:
            s = summary[kind]
            if name == "mean over classes":
                cells.append(f"{s['overall']['box_dice_mean_over_classes']:.3f}")
            elif name in s["per_class"]:
                c = s["per_class"][name]
                cells.append(f"{c['box_dice']:.3f} ({c['instances']})")
            else:
                cells.append("-")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "NoC@85 / NoC@90 (mean interactions, box = 1, at most 20; % reaching the target "
            "within 20):", ""]  # fmt: skip
    out.append("| class | " + " | ".join(kinds) + " |")
    out.append("|---|" + "---:|" * len(kinds))
    for name in [*classes, "all instances"]:
        cells = []
        for kind in kinds:
            s = summary[kind]
            c = s["overall"] if name == "all instances" else s["per_class"].get(name)
            if c is None:
                cells.append("-")
                continue
            cells.append(
                f"{c['noc85']:.2f} / {c['noc90']:.2f} "
                f"({c['noc85_reached'] * 100:.0f} % / {c['noc90_reached'] * 100:.0f} %)"
            )
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Click series (means over class instances; a series stops at IoU 0.90 or 20 interactions; "
        "lost: IoU 0 after a click although the box draft overlapped):",
        "",
        "| engine | instances | IoU box | IoU best | IoU last | clicks | raising IoU | lowering IoU "
        "| lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        o = summary[kind]["overall"]
        up, down = o["clicks_raising_iou"], o["clicks_lowering_iou"]
        out.append(
            f"| {kind} | {o['instances']} | {o['iou_box']:.3f} | {o['iou_best']:.3f} | "
            f"{o['iou_last']:.3f} | {o['clicks']} | {'-' if up is None else f'{up * 100:.0f} %'} | "
            f"{'-' if down is None else f'{down * 100:.0f} %'} | {o['lost_after_click']} |"
        )
    return "\n".join(out)


def cpu_pressure() -> float | None:
    """Linux PSI: % of the last 300 s in which some runnable task waited for a CPU."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(dict(f.split("=") for f in line.split()[1:])["avg300"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_annotate"))
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=9, help="round-2 slices per seed")
    ap.add_argument("--limit", action="append", default=[],
                    help="ENGINE=N: measure only the first N slices with ENGINE")  # fmt: skip
    ap.add_argument("--adapter", type=Path, help="an adapter folder (default: train round 1's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-mask-input", action="store_true",
                    help="send no previous logits with the clicks")  # fmt: skip
    ap.add_argument("--json", type=Path, default=Path("/tmp/bench_annotate.json"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    limits = {k: int(v) for k, _, v in (item.partition("=") for item in args.limit)}
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    load_start, pressure_start = os.getloadavg()[0], cpu_pressure()
    t_start = time.perf_counter()
    scans, round1, folders = prepare(work, args.seeds, args.n)
    adapter, train_s = args.adapter, 0.0
    if "adapter" in args.engines and adapter is None:
        adapter, train_s = train_adapter(work, scans, round1)
        print(f"adapter: {adapter} (trained in {train_s:.0f} s)", flush=True)
    t_prepared = time.perf_counter()
    slices, classes = load_slices(scans, folders)
    summary, seconds, instances = {}, {}, {}
    for kind in args.engines:
        chosen = slices[: limits.get(kind, len(slices))]
        t0 = time.perf_counter()
        run = measure(
            kind,
            adapter if kind == "adapter" else None,
            chosen,
            len(classes),
            mask_input=not args.no_mask_input,
        )
        seconds[kind] = round(time.perf_counter() - t0, 1)
        summary[kind] = summarize(run, classes)
        instances[kind] = run.instances
    shown = tables(summary, classes)
    record = {
        "command": " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads",
        "mask_input": not args.no_mask_input,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "cpu_pressure_some_avg300": {"start": pressure_start, "end": cpu_pressure()},
        "slices": [{"seed": s.seed, "case": s.case, "z": s.z} for s in slices],
        "slices_without_class": sum(1 for s in slices if not s.truth.any()),
        "adapter": str(adapter) if adapter else None,
        "adapter_train_s": round(train_s, 1),
        "adapter_sets": list(ADAPTER_SETS),
        "prepare_s": round(t_prepared - t_start, 1),
        "engine_s": seconds,
        "measure_s": round(time.perf_counter() - t_prepared, 1),
        "summary": summary,
        "instances": instances,
        "table": shown,
    }
    args.json.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(
        f"{record['command']} ({record['machine']}); load {load_start:.1f} -> "
        f"{os.getloadavg()[0]:.1f}; CPU pressure avg300 {pressure_start} -> {cpu_pressure()} %; "
        f"{len(slices)} slices ({record['slices_without_class']} "
        f"without a class); seconds per engine {seconds}; prepare {record['prepare_s']} s"
    )
    print(shown)


if __name__ == "__main__":
    main()
