"""A tiny SAM checkpoint with every weight perturbed, shared by the model tests.

SAM initializes its position tables at zero; perturbing every tensor makes the interpolation and
equality tests able to fail.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.params import LoraParams
from train.sam_registry import build_sam

LORA = LoraParams(
    rank=4, alpha=8.0, dropout=0.0, encoder=True, decoder=True, finetune="lora", fine_head=False
)


def perturbed_state(arch: str = "tiny", input_size: int = 64, seed: int = 0) -> dict:
    """State dict of a SAM of `arch` with N(0, 0.02) noise added to every tensor (a new dict)."""
    return dict(_perturbed(arch, input_size, seed))


@functools.lru_cache(maxsize=8)
def _perturbed(arch: str, input_size: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam(arch, input_size)
    state = sam.state_dict()
    return {
        k: (v + 0.02 * torch.randn(v.shape, generator=gen)).contiguous() for k, v in state.items()
    }


def write_checkpoint(path: Path, arch: str = "tiny", input_size: int = 64, seed: int = 0) -> Path:
    """Save `perturbed_state` as safetensors (or .pth when the suffix says so) at `path`."""
    state = perturbed_state(arch, input_size, seed)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
