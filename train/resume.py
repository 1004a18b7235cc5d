"""What an interrupted run leaves behind so `train.resume: auto` can continue it exactly.

The resume folder sits beside the adapter folder, not inside it (`models/.resume/adapter/` for
`models/adapter/`), because DVC deletes a stage's outputs before running it. It holds:

    state.pt        trainable weights, optimizer state, the next step, the log rows so far and the
                    run hash; written atomically, read with weights_only=True
    train_log.csv   the log so far (the final log is only written when the run completes)

No random-number state is saved: every random draw of a step is seeded from (seed, rank, step),
so continuing at step k replays exactly what an uninterrupted run would have done.

The run hash covers what changes the trained weights: seed, model, lora, loss, the train keys
below, and the bytes of the data and base checkpoint. Keys that only change speed or
bookkeeping (workers, device, compile, save_every, resume) are left out, so they can differ.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from core.atomic import atomic_path
from core.params import Params, fingerprint, to_dict

STATE_FILE = "state.pt"
LOG_FIELDS = ("step", "loss", "ce", "dice", "lr", "seconds")
_NOT_HASHED = ("num_workers", "save_every", "resume", "device", "compile")


def resume_dir_for(out: Path) -> Path:
    """`models/adapter` -> `models/.resume/adapter`."""
    return out.parent / ".resume" / out.name


def run_hash(params: Params, data_sha256: str, checkpoint_sha256: str | None) -> str:
    """Short hash of everything that determines the trained weights (see the module docstring)."""
    train = {k: v for k, v in to_dict(params.train).items() if k not in _NOT_HASHED}
    blob = {
        "seed": params.seed,
        "model": to_dict(params.model),
        "lora": to_dict(params.lora),
        "loss": to_dict(params.loss),
        "train": train,
        "data_sha256": data_sha256,
        "checkpoint_sha256": checkpoint_sha256,
    }
    return fingerprint(blob)


def save_state(
    folder: Path,
    *,
    step: int,
    hash_: str,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    rows: list[dict[str, float]],
) -> None:
    """Write the resume state for continuing at `step` (atomically), and the log so far."""
    state = {
        "step": step,
        "hash": hash_,
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer": optimizer_state,
        "log": [[row[f] for f in LOG_FIELDS] for row in rows],
    }
    with atomic_path(folder / STATE_FILE, suffix=".pt") as tmp:
        torch.save(state, tmp)
    write_log(folder / "train_log.csv", rows)


def load_state(folder: Path, hash_: str, quiet: bool = False) -> dict[str, Any] | None:
    """The saved state if it belongs to this run (same hash), else None (with a note)."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged state must not stop a fresh run
        if not quiet:
            print(f"note: {path} is unreadable ({e}); starting over", file=sys.stderr)
        return None
    if state.get("hash") != hash_:
        if not quiet:
            print(
                f"note: {path} was made with other params or data; starting over",
                file=sys.stderr,
            )
        return None
    state["log"] = [dict(zip(LOG_FIELDS, row, strict=True)) for row in state["log"]]
    return state


def clear_state(folder: Path) -> None:
    """Remove the resume folder once the run has completed (and `.resume/` if now empty)."""
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):  # other runs may still have state there
        folder.parent.rmdir()


def write_log(path: Path, rows: list[dict[str, float]]) -> None:
    """The training log as CSV (one row per step), written atomically."""
    with atomic_path(path, suffix=".csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(LOG_FIELDS)
        for row in rows:
            step = int(row["step"])
            writer.writerow([step, *(f"{row[k]:.6g}" for k in LOG_FIELDS[1:])])
