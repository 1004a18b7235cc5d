"""DistributedDataParallel under torchrun: 2 CPU processes (gloo) end with identical weights,
and with the weights of one process trained on the same global batch, where that can hold.

Two ranks of batch B are one process of batch 2B only up to floating-point rounding, and only
without the Dice term:

- the data are the same: step s of rank r takes stream positions [(2s + r) B, (2s + r + 1) B),
  prompts come from (epoch, index) and prompt dropout from the step alone, so the two ranks'
  batches are the two halves of the single process's batch (test_the_ranks_split_...);
- DDP averages the ranks' gradients, which is the gradient of the mean of the ranks' losses. For
  the cross-entropy (a mean over equally many pixels on each rank) that is the loss of the whole
  batch; Dice is pooled over the batch (`train.loss`: one Dice per class, summed over all images),
  and the mean of two half-batch Dice losses is another function with another gradient
  (test_pooled_dice_...). With the default `loss.dice_weight` (0.8), 4 steps of the setup below
  left the two adapters apart by three quarters of what training had moved them;
- with `loss.dice_weight: 0` what is left is rounding: DDP averages the ranks' half-batch
  gradients over gloo, the single process sums over its whole batch, in another order. AdamW divides
  each gradient by its running magnitude, so a last-bit difference in a gradient near zero can
  move that weight by a small fraction of `lr`: the weights agree to within lr / 100, not
  bitwise. Nothing else in a step differs: no BatchNorm (SAM uses LayerNorm), padding points
  are masked out by the decoder, and a step draws nothing from torch's generator, whose seed is
  per rank (`train.loop.step_seed`): with `lora.dropout` > 0 the ranks' dropout masks would not
  be the single process's either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO
from reliability_files import torch_threads
from safetensors.torch import load_file
from synthetic_sets import bright_squares

from core.params import Params, parse_params
from train.data import StepBatchSampler, SyntheticSlices, collate, prompt_free
from train.loss import segmentation_loss
from train.model import build_fewsam, trainable_state_dict
from train.run import run as train_run

TORCHRUN = Path(sys.executable).parent / "torchrun"

# Each rank trains, then prints a checksum of its own trainable tensors.
DRIVER = """
import hashlib, os, sys
import torch
torch.set_num_threads(1)
from pathlib import Path
from core.params import load_params
from train.model import trainable_state_dict
from train.run import run

params_file, data, out, log = sys.argv[1:]
model = run(load_params(params_file), Path(data), Path(out), Path(log))
digest = hashlib.sha256()
for name, t in sorted(trainable_state_dict(model).items()):
    digest.update(name.encode())
    digest.update(t.float().numpy().tobytes())
print(f"rank {os.environ['RANK']} checksum {digest.hexdigest()}", flush=True)
"""


def _checksum(weights: dict) -> str:
    digest = hashlib.sha256()
    for name, t in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(t.float().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_two_ranks_end_identical(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(max_steps=4, batch_size=2, warmup_steps=1, num_workers=0, device="cpu")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "driver.py").write_text(DRIVER)
    squares = bright_squares(tmp_path / "synthetic.h5")
    out = tmp_path / "adapter"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(tmp_path / "driver.py"), str(tmp_path / "params.yaml"), str(squares), str(out)]
    cmd += [str(tmp_path / "log.csv")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sums = dict(re.findall(r"rank (\d) checksum ([0-9a-f]{64})", result.stdout))
    assert set(sums) == {"0", "1"}, result.stdout
    assert sums["0"] == sums["1"]
    # Rank 0 alone wrote the adapter, and it holds those weights.
    assert sums["0"] == _checksum(load_file(str(out / "adapter.safetensors")))
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 1 + 4


def _tiny(batch_size: int, max_steps: int) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(max_steps=max_steps, batch_size=batch_size, warmup_steps=1)
    data["train"].update(num_workers=0, device="cpu", save_every=1000, compile=False)
    data["loss"]["dice_weight"] = 0.0  # see the module docstring
    return data


def test_the_ranks_split_the_single_process_batch(tmp_path: Path) -> None:
    params = parse_params(_tiny(batch_size=4, max_steps=6))
    seed = params.stream_seed
    squares = bright_squares(tmp_path / "synthetic.h5", n=5)  # 5 samples: batches cross epochs
    dataset = SyntheticSlices(squares, 64, params.train.points_per_class, seed)
    one = StepBatchSampler(len(dataset), 4, seed, 0, 6)
    ranks = [StepBatchSampler(len(dataset), 2, seed, 0, 6, rank, 2) for rank in range(2)]
    steps = 0
    for keys, first, second in zip(one, *ranks, strict=True):
        assert first + second == keys
        whole = collate([dataset[k] for k in keys])
        halves = [collate([dataset[k] for k in half]) for half in (first, second)]
        for name, tensor in whole._asdict().items():
            assert torch.equal(tensor, torch.cat([getattr(h, name) for h in halves])), name
        steps += 1
    assert steps == 6
    dataset.close()


def test_pooled_dice_is_why_two_ranks_are_not_one_big_batch(params: Params) -> None:
    """The gradient DDP applies (that of the mean of the half-batch losses) against the gradient
    of the whole batch's loss: the same for cross-entropy, another one for the pooled Dice."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 16, 16, generator=generator)
    target = torch.zeros(4, 16, 16, dtype=torch.long)
    target[0, :10, :10] = 1  # a large structure in the first half, a small one in the second
    target[2, :3, :3] = 1

    def gradients(ce_weight: float, dice_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        weights = dataclasses.replace(params.loss, ce_weight=ce_weight, dice_weight=dice_weight)
        whole, halves = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        segmentation_loss(whole, target, weights).total.backward()
        ranks = [segmentation_loss(halves[i : i + 2], target[i : i + 2], weights) for i in (0, 2)]
        ((ranks[0].total + ranks[1].total) / 2).backward()
        assert whole.grad is not None and halves.grad is not None
        return whole.grad, halves.grad

    torch.testing.assert_close(*gradients(1.0, 0.0))
    whole, averaged = gradients(0.0, 1.0)
    assert not torch.allclose(whole, averaged, rtol=0.1, atol=0.0)


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """docs/method.md's `torchrun --nproc_per_node 2 -m fewsam -- train run` with batch 2 per process
    against `fewsam train run` with batch 4: the same adapter to within lr / 100 (module
    docstring), the same logged losses."""
    steps = 4
    two, one = _tiny(batch_size=2, max_steps=steps), _tiny(batch_size=4, max_steps=steps)
    params = parse_params(one)
    dropout = params.train.prompt_dropout
    # Both kinds of step: prompt-free ones leave the class embedding without a gradient.
    assert {prompt_free(params.stream_seed, s, dropout) for s in range(steps)} == {True, False}
    squares = bright_squares(tmp_path / "synthetic.h5")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(two))
    ddp = tmp_path / "ddp"
    # --standalone: a free rendezvous port, so that concurrent runs cannot collide.
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "fewsam", "--", "train", "run"]
    cmd += ["-p", tmp_path / "params.yaml", "--data", squares]
    cmd += ["--out", ddp / "adapter", "--log", ddp / "log.csv"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]

    single = tmp_path / "single"
    with torch_threads(1):
        train_run(params, squares, single / "adapter", single / "log.csv")

    mine = load_file(str(ddp / "adapter" / "adapter.safetensors"))
    theirs = load_file(str(single / "adapter" / "adapter.safetensors"))
    torch.manual_seed(params.stream_seed)  # the initial weights, as train.loop builds them
    initial = trainable_state_dict(build_fewsam(params.model, params.lora, 1))
    assert mine.keys() == theirs.keys() == initial.keys() and mine
    atol = params.train.lr / 100
    for name, tensor in theirs.items():
        torch.testing.assert_close(
            mine[name], tensor, rtol=0.0, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
        )
    # Training moved the weights far beyond that tolerance: the agreement is not trivial.
    moved = max(float((t - initial[n]).abs().max()) for n, t in theirs.items())
    assert moved > 10 * atol
    # The logged loss is the mean over ranks: the whole batch's cross-entropy, step by step.
    rows = [
        [line.split(",") for line in (run / "log.csv").read_text().splitlines()[1:]]
        for run in (ddp, single)
    ]
    assert [r[0] for r in rows[0]] == [r[0] for r in rows[1]] == [str(s) for s in range(steps)]
    for mine_row, their_row in zip(*rows, strict=True):
        assert float(mine_row[2]) == pytest.approx(float(their_row[2]), rel=2e-5)  # ce, 6 digits
        assert mine_row[4] == their_row[4]  # lr
