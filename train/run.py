"""Stage 3 entry point: choose the device, join the process group under torchrun, train.

Single process:  fewsam train run
Several GPUs:    torchrun --nproc_per_node 4 -m fewsam -- train run [options]
(The `--` stops torchrun from reading `--log` as an abbreviation of its own `--log-dir`.)
`train.batch_size` is per process, as usual with DistributedDataParallel; the batches of the
processes are consecutive slices of one seeded sample stream (see `train.data`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from synth.errors import ParamsError
from synth.params import Params


@dataclass(frozen=True)
class Context:
    """Where this process trains and its place among the torchrun processes."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """`auto`: cuda, then mps, then cpu. An explicit choice that is unavailable is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if choice == "auto":
        choice = "cuda" if cuda else "mps" if mps else "cpu"
    if (choice == "cuda" and not cuda) or (choice == "mps" and not mps):
        raise ParamsError(f"train.device: {choice} is not available on this machine")
    if choice == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(choice)


def _init_context(device_choice: str) -> Context:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context(device=pick_device(device_choice))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = pick_device(device_choice, local_rank)
    if device.type == "mps":
        raise ParamsError("train.device: mps cannot run several processes; use cuda or cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        rank=rank,
        world_size=world_size,
        device_id=device if device.type == "cuda" else None,
    )
    return Context(device=device, rank=rank, local_rank=local_rank, world_size=world_size)


def run(
    params: Params, data: Path, out: Path, log: Path, stop_after: int | None = None
) -> torch.nn.Module:
    """Train on `data` (synthetic.h5), write the adapter folder `out` and the CSV `log`.

    Returns the trained model (on every rank). `stop_after` ends the run after that many steps,
    keeping its resume state and writing no adapter, exactly as an interruption would.
    """
    from train.loop import train

    ctx = _init_context(params.train.device)
    try:
        return train(params, data, out, log, ctx, stop_after=stop_after)
    finally:
        if ctx.distributed and dist.is_initialized():
            dist.destroy_process_group()
