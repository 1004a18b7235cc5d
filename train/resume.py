"""What an interrupted run leaves behind so `train.resume: auto` can continue it exactly.

The resume folder sits beside the adapter folder, not inside it (`models/.resume/adapter/` for
`models/adapter/`), because DVC deletes a stage's outputs before running it. It holds:

    state.pt        trainable weights, optimizer state, the next step, the log rows so far and the
                    run hash; written atomically, read with weights_only=True
    train_log.csv   the log so far (the final log is only written when the run completes)

No random-number state is saved: every random draw of a step is seeded from (seed, rank, step),
so continuing at step k replays exactly what an uninterrupted run would have done. Its log starts
with the saved rows as they were (timings included) and the resumed run prints
`note: resumed from step k (...state.pt)` on stderr.

During a run, `Checkpointer` decides when rank 0 writes them: the state every `train.save_every`
steps, the log alone every LOG_FLUSH_SECONDS in between, nothing after the last step.

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
from train.model import FewSam, trainable_state_dict

STATE_FILE = "state.pt"
LOG_FILE = "train_log.csv"
LOG_FLUSH_SECONDS = 30.0
LOG_FIELDS = ("step", "loss", "ce", "dice", "lr", "seconds")
_NOT_HASHED = ("num_workers", "save_every", "resume", "device", "compile")


def resume_dir_for(out: Path) -> Path:
    """`models/adapter` -> `models/.resume/adapter`."""
    return out.parent / ".resume" / out.name


def run_hash(params: Params, data_sha256: str, checkpoint_sha256: str | None) -> str:
    """Short hash of everything that determines the trained weights (see the module docstring)."""
    train = {k: v for k, v in to_dict(params.train).items() if k not in _NOT_HASHED}
    blob = {
        "seed": params.stream_seed,
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
    write_log(folder / LOG_FILE, rows)


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


def restore(
    folder: Path, hash_: str, model: FewSam, optimizer: torch.optim.Optimizer, quiet: bool
) -> tuple[int, list[dict[str, float]]]:
    """Load a matching resume state into `model` and `optimizer`: (next step, log rows so far)."""
    state = load_state(folder, hash_, quiet=quiet)
    if state is None:
        return 0, []
    if set(state["model"]) != set(trainable_state_dict(model)):
        # Same params, but code that names its tensors differently: not this run's state.
        if not quiet:
            print(f"note: {folder} holds other tensors; starting over", file=sys.stderr)
        return 0, []
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    step = int(state["step"])
    if not quiet:
        # Every step is seeded by its index, so a resumed run and one that silently started over
        # end alike; this line is what tells them apart.
        print(f"note: resumed from step {step} ({folder / STATE_FILE})", file=sys.stderr)
    return step, state["log"]


class Checkpointer:
    """Writes the resume state of a run every `save_every` steps, and the log in between.

    Only where `active` (rank 0). Nothing is written once `max_steps` are done: the finished run
    writes its adapter and log instead and clears the folder.
    """

    def __init__(
        self,
        folder: Path,
        hash_: str,
        save_every: int,
        max_steps: int,
        active: bool,
        now: float,
    ) -> None:
        self.folder, self.hash_ = folder, hash_
        self.save_every, self.max_steps, self.active = save_every, max_steps, active
        self._last_write = now  # perf_counter seconds of the last write (or of the start)

    def after_step(
        self,
        done: int,
        now: float,
        model: FewSam,
        optimizer: torch.optim.Optimizer,
        rows: list[dict[str, float]],
    ) -> None:
        """Called once `done` steps are done, at `now`, with the log `rows` so far."""
        if not self.active or done >= self.max_steps:
            return
        if done % self.save_every == 0:
            save_state(
                self.folder,
                step=done,
                hash_=self.hash_,
                model_state=trainable_state_dict(model),
                optimizer_state=optimizer.state_dict(),
                rows=rows,
            )
        elif now - self._last_write > LOG_FLUSH_SECONDS:
            write_log(self.folder / LOG_FILE, rows)
        else:
            return
        self._last_write = now


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
