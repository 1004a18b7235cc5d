"""DistributedDataParallel under torchrun: 2 CPU processes (gloo) end with identical weights."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from safetensors.torch import load_file
from synthetic_sets import bright_squares

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
