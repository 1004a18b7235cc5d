"""Stage 3 entry point: choose the device, join the process group under torchrun, train.

Single process:  fewsam train run
Several GPUs:    torchrun --nproc_per_node 4 -m fewsam -- train run [options]
(The `--` stops torchrun from reading `--log` as an abbreviation of its own `--log-dir`.)
`train.batch_size` is per process, as usual with DistributedDataParallel; the batches of the
processes are consecutive slices of one seeded sample stream (see `train.data`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from core.params import Params
from train.context import init_context
from train.loop import train


def run(
    params: Params, data: Path, out: Path, log: Path, stop_after: int | None = None
) -> torch.nn.Module:
    """Train on `data` (synthetic.h5), write the adapter folder `out` and the CSV `log`.

    Returns the trained model (on every rank). `stop_after` ends the run after that many steps,
    keeping its resume state and writing no adapter, exactly as an interruption would.
    """
    ctx = init_context(params.train.device)
    try:
        return train(params, data, out, log, ctx, stop_after=stop_after)
    finally:
        if ctx.distributed and dist.is_initialized():
            dist.destroy_process_group()
