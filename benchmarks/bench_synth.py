"""Synthesis speed and memory: the stage with worker processes against a plain one-process loop.

    .venv/bin/python benchmarks/bench_synth.py                  # speed at 256 and 512, memory
    .venv/bin/python benchmarks/bench_synth.py --skip-memory    # speed only (about 2 minutes)
    .venv/bin/python benchmarks/bench_synth.py --skip-speed     # memory only, N = 20,000
    .venv/bin/python benchmarks/bench_synth.py --compression --skip-speed --skip-memory

Speed: samples per second of `synth.synthesize.run` (params.yaml's synth section, `workers` as
given) against the baseline a user would write first: one process, the same `make_sample` (the
same albumentations transforms and pasting), each sample written with h5py into the same HDF5
layout (one chunk per sample, shuffle + gzip 1, compressed by h5py in that process). Both times
include opening and closing the file and, for the stage, starting the workers.

Memory: the stage run in a child process while this one samples, every 0.2 s, the resident and
proportional set sizes (RSS, PSS) summed over the child and all its descendants, read from /proc.
PSS counts pages shared by forked workers once; RSS counts them in every process.

Exemplars are made here: 9 abdomen-like slices (a body, 8 ellipse "organs" with texture and
noise) and a pool of 12 bodies, at the requested size.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from core.params import Params, load_params
from core.schema import ExemplarSet, write_exemplars
from synth import synthesize
from synth.synthesize import exemplar_weights, make_sample

CLASSES = ("a", "b", "c", "d", "e", "f", "g", "h")


def phantom_set(size: int, n: int = 9, pool: int = 12, seed: int = 0) -> ExemplarSet:
    """Abdomen-like 1 x size x size slices in [0, 1] with 8 ellipse classes, and a pool."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size

    def body() -> np.ndarray:
        inside = ((yy - 0.5) / 0.36) ** 2 + ((xx - 0.5) / 0.44) ** 2 < 1
        texture = rng.normal(0, 0.03, (size, size))
        return np.where(inside, 0.4 + texture, 0.02 * rng.random((size, size)))

    images, labels = [], []
    for _ in range(n):
        image, label = body(), np.zeros((size, size), np.uint8)
        for k in range(1, 9):
            cy, cx = 0.3 + 0.4 * rng.random(), 0.25 + 0.5 * rng.random()
            ry, rx = 0.03 + 0.07 * rng.random(), 0.03 + 0.07 * rng.random()
            organ = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            image[organ] = 0.45 + 0.06 * k + rng.normal(0, 0.03, organ.sum())
            label[organ] = k
        images.append(np.clip(image, 0, 1)[None])
        labels.append(label)
    return ExemplarSet(
        image=np.stack(images).astype(np.float32),
        label=np.stack(labels),
        case=tuple(f"case{i:04d}" for i in range(n)),
        slice=np.zeros(n, np.int64),
        pool_image=np.stack([np.clip(body(), 0, 1)[None] for _ in range(pool)]).astype(np.float32),
        pool_case=tuple(f"case{i:04d}" for i in range(pool)),
        pool_slice=np.zeros(pool, np.int64),
        classes=CLASSES,
        channels=("CT",),
        dataset_format="synapse",
    )


def with_synth(params: Params, **changes: object) -> Params:
    return dataclasses.replace(params, synth=dataclasses.replace(params.synth, **changes))


def plain_loop(params: Params, ex: ExemplarSet, out: Path) -> None:
    """The baseline: make each sample and write it with h5py, all in this process."""
    n, (c, h, w) = params.synth.samples, ex.image.shape[1:]
    weights = exemplar_weights(ex.label)
    opts = {"compression": "gzip", "compression_opts": 1, "track_times": False}
    with h5py.File(out, "w") as f:
        image = f.create_dataset(
            "image", (n, c, h, w), "<f2", chunks=(1, c, h, w), shuffle=True, **opts
        )
        label = f.create_dataset("label", (n, h, w), np.uint8, chunks=(1, h, w), **opts)
        exemplar, background = np.zeros(n, np.int32), np.zeros(n, np.int32)
        for i in range(n):
            s = make_sample(ex, params.synth, params.seed, i, weights)
            image[i] = s.image.astype("<f2")
            label[i] = s.label
            exemplar[i], background[i] = s.exemplar, s.background
        f.create_dataset("exemplar", data=exemplar, track_times=False)
        f.create_dataset("background", data=background, track_times=False)


def _cpu() -> tuple[float, float]:
    """CPU seconds of this process, and of this process plus its ended children (the stage's
    workers are joined, hence counted, by the time `run` returns)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    own = me.ru_utime + me.ru_stime
    return own, own + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of all processes, CPU seconds of this one) of `fn(*args)`."""
    wall, (own, cpu) = time.perf_counter(), _cpu()
    fn(*args)
    own_after, cpu_after = _cpu()
    return time.perf_counter() - wall, cpu_after - cpu, own_after - own


def speed(params: Params, size: int, samples: int, workers: int, repeats: int, tmp: Path) -> dict:
    """Best-of-`repeats` wall and CPU seconds of the plain loop and of the stage."""
    ex = phantom_set(size)
    exemplars = tmp / f"exemplars{size}.h5"
    write_exemplars(exemplars, ex, {"dataset": {"format": "synapse"}})
    p = with_synth(params, samples=samples, workers=workers)
    stage, loop = [], []
    for _ in range(repeats):  # interleaved, so a burst of load from elsewhere hits both
        loop.append(timed(plain_loop, p, ex, tmp / "loop.h5"))
        stage.append(timed(synthesize.run, p, exemplars, tmp / "stage.h5"))
    mb = (tmp / "stage.h5").stat().st_size / 2**20
    (loop_s, loop_cpu, _), (stage_s, stage_cpu, writer_cpu) = min(loop), min(stage)
    return {
        "loop_s": loop_s,
        "loop_cpu": loop_cpu,
        "stage_s": stage_s,
        "stage_cpu": stage_cpu,
        "writer_cpu": writer_cpu,
        "mb": mb,
    }


def compression(params: Params, tmp: Path, n: int = 50) -> None:
    """Bytes stored per raw byte and write time per slice of each filter choice, at 512 x 512."""
    ex = phantom_set(512)
    p = params.synth
    images = [make_sample(ex, p, params.seed, i).image.astype("<f2") for i in range(n)]
    print("| filters | stored / raw | write ms per slice |")
    print("|---|---:|---:|")
    for name, opts in (
        ("shuffle + gzip 1", {"compression": "gzip", "compression_opts": 1, "shuffle": True}),
        ("gzip 1", {"compression": "gzip", "compression_opts": 1}),
        ("shuffle + lzf", {"compression": "lzf", "shuffle": True}),
        ("lzf", {"compression": "lzf"}),
    ):
        path = tmp / "compression.h5"
        with h5py.File(path, "w") as f:
            d = f.create_dataset("image", (n, 1, 512, 512), "<f2", chunks=(1, 1, 512, 512), **opts)
            start = time.perf_counter()
            for i, image in enumerate(images):
                d[i] = image
            ms = 1000 * (time.perf_counter() - start) / n
        ratio = path.stat().st_size / (n * images[0].nbytes)
        print(f"| {name} | {ratio:.3f} | {ms:.1f} |")


def _tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over `pid` and its descendants."""
    rss = pss = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss"):
                    kb = int(value.split()[0]) * 1024
                    rss, pss = (rss + kb, pss) if key == "Rss" else (rss, pss + kb)
        except (OSError, ValueError):
            pass  # the process ended between listing and reading
    return rss, pss


MEMORY_CHILD = """
import sys
from pathlib import Path
from bench_synth import phantom_set, with_synth
from synth import synthesize
from core.params import load_params
from core.schema import write_exemplars
size, samples, workers, tmp = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
write_exemplars(tmp / "ex.h5", phantom_set(size), {"dataset": {"format": "synapse"}})
params = with_synth(load_params("params.yaml"), samples=samples, workers=workers)
synthesize.run(params, tmp / "ex.h5", tmp / "synthetic.h5")
"""


def memory(size: int, samples: int, workers: int, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    args = [sys.executable, "-c", MEMORY_CHILD, str(size), str(samples), str(workers), str(tmp)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env)
    timeline: list[tuple[float, int, int]] = []

    def sample() -> None:
        while proc.poll() is None:
            timeline.append((time.perf_counter() - start, *_tree_memory(proc.pid)))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample)
    watcher.start()
    code = proc.wait()
    watcher.join()
    if code != 0:
        raise SystemExit(f"memory run failed with exit code {code}")
    total = time.perf_counter() - start
    t = np.array(timeline)
    early = t[t[:, 0] <= 0.1 * total]  # the first tenth of the run, as a reference
    gib = 2**30
    return {
        "size": size,
        "samples": samples,
        "seconds": total,
        "peak_rss_gib": t[:, 1].max() / gib,
        "peak_pss_gib": t[:, 2].max() / gib,
        "first_tenth_peak_pss_gib": early[:, 2].max() / gib if len(early) else float("nan"),
        "last_tenth_peak_pss_gib": t[t[:, 0] >= 0.9 * total, 2].max() / gib,
        "file_gib": (tmp / "synthetic.h5").stat().st_size / gib,
    }


def _print_speed(params: Params, a: argparse.Namespace, tmp: Path) -> None:
    """One table row per size. The idle estimate is the loop's CPU time over the stage's busiest
    share: the workers' CPU split over `workers` cores, or the writer's, whichever is larger."""
    print(
        f"| size | samples | plain loop | stage, {a.workers} workers | ratio | CPU ms/sample: "
        "loop, stage (all), writer | ratio estimate, idle cores | file |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size, n in zip((256, 512), a.samples, strict=True):
        r = speed(params, size, n, a.workers, a.repeats, tmp)
        loop, stage = n / r["loop_s"], n / r["stage_s"]
        cpu = [1000 * r[k] / n for k in ("loop_cpu", "stage_cpu", "writer_cpu")]
        workers_cpu = cpu[1] - cpu[2]
        idle = cpu[0] / max(workers_cpu / a.workers, cpu[2])
        print(
            f"| {size} | {n} | {loop:.1f}/s | {stage:.1f}/s | {stage / loop:.2f}x "
            f"| {cpu[0]:.1f}, {cpu[1]:.1f}, {cpu[2]:.1f} | {idle:.2f}x | {r['mb']:.0f} MB |"
        )


def _load() -> str:
    """Load average and, where the kernel reports it, the share of time runnable tasks waited
    for a CPU over the last 60 s (other jobs on a shared machine show up here)."""
    text = f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus"
    try:
        some = Path("/proc/pressure/cpu").read_text().split("\n")[0]
        text += f", CPU pressure avg60 {some.split()[2].split('=')[1]}%"
    except (OSError, IndexError):
        pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, nargs=2, default=[1000, 300], help="at 256, 512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-samples", type=int, default=20000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--compression", action="store_true", help="also compare HDF5 filters")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system)")
    a = parser.parse_args()
    params = load_params("params.yaml")
    print(f"before: {_load()}")
    with tempfile.TemporaryDirectory(dir=a.tmp) as scratch:
        if a.compression:
            compression(params, Path(scratch))
        if not a.skip_speed:
            _print_speed(params, a, Path(scratch))
        if not a.skip_memory:
            for key, value in memory(512, a.memory_samples, a.workers, Path(scratch)).items():
                print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
