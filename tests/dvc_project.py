"""A micro copy of the project in a temporary git + DVC repository, for the pipeline tests.

The copy holds the stage code, dvc.yaml and a params.yaml shrunk so that the whole pipeline runs
in seconds on two CPU cores: a few 32 px phantom cases, 8 synthetic samples, 2 training steps of
the tiny SAM at 64 px and of the U-Net, one test case. The base weights (random) and the dataset
(phantom scans) live *outside* the copy and are given by absolute paths, as real weights and data
would be; the pipeline's own phantom stage still runs, as in the default project.

Commands run with the copy's root first on PYTHONPATH, so that `fewsam` (whose editable install
points at the main checkout) imports the copy's packages, and a code change in the copy is what
the stages run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from sam_helpers import write_checkpoint

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a fresh clone needs to run the pipeline: stage code, pipeline, params, DVC settings.
COPIED = (
    "dvc.yaml",
    "params.yaml",
    "core",
    "synth",
    "train",
    "baseline",
    "evaluate",
    "phantom",
    "pretrain",
    "suggest",
    "annotate",
    "fewsam",
    ".dvc/config",
    ".dvc/plots",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "data/annotations",
)
# The smallest phantom the pipeline runs on: 4 Synapse cases (the TransUNet split gives 2 training
# and 2 test cases) of 32 x 32 x 8, 2 BraTS cases.
MICRO_PHANTOM = dict(
    synapse_cases=4,
    synapse_size=32,
    synapse_slices=8,
    brats_cases=2,
    brats_size=32,
    brats_slices=8,
)
STAGES = ("phantom", "extract", "synthesize", "train", "baseline", "infer", "score")
_RUNNING = re.compile(r"Running stage '([\w-]+)'")


def micro_params(params: dict[str, Any], checkpoint: Path, dataset: Path) -> dict[str, Any]:
    """The repository's params with every size cut to the minimum (a new mapping)."""
    p = yaml.safe_load(yaml.safe_dump(params))
    p["exemplars"] = 2
    p["dataset"].update(format="synapse", root=str(dataset))
    p["phantom"].update(MICRO_PHANTOM)
    p["synth"].update(samples=8, workers=1)
    p["model"].update(arch="tiny", checkpoint=str(checkpoint), input_size=64)
    p["train"].update(max_steps=2, batch_size=2, warmup_steps=0, save_every=1, device="cpu")
    p["baseline"].update(max_steps=2, batch_size=2, warmup_steps=0)
    p["evaluate"].update(max_cases=1, zero_shot_prompts=["point", "box"], overlays_per_case=1)
    return p


def env(root: Path) -> dict[str, str]:
    """Environment for commands in the copy: its packages first, the venv's tools on PATH."""
    out = dict(os.environ)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    out["PYTHONPATH"] = str(root)
    out["OMP_NUM_THREADS"] = "1"
    for who in ("AUTHOR", "COMMITTER"):
        out[f"GIT_{who}_NAME"] = "fewsam tests"
        out[f"GIT_{who}_EMAIL"] = "tests@fewsam.invalid"
    return out


def sh(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the copy; on failure the assertion shows its output."""
    done = subprocess.run(args, cwd=root, env=env(root), capture_output=True, text=True)
    if check:
        assert done.returncode == 0, (
            f"{' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def make_project(base: Path) -> Path:
    """Copy the project into `base/project`, shrink its params, commit it; return its root.

    Outside the copy: the random base checkpoint `base/outside/tiny_random.safetensors` and the
    phantom dataset `base/outside/phantom/synapse`.
    """
    root = base / "project"
    root.mkdir(parents=True)
    for name in COPIED:
        src, dst = REPO / name, root / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    outside = base / "outside"
    outside.mkdir()
    checkpoint = write_checkpoint(outside / "tiny_random.safetensors", input_size=64)
    dataset = outside / "phantom" / "synapse"
    params = micro_params(yaml.safe_load((REPO / "params.yaml").read_text()), checkpoint, dataset)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "fewsam", "data", "phantom", "--out", str(dataset.parent))
    sh(root, "git", "init", "-q", "-b", "main")
    sh(root, "git", "config", "user.name", "fewsam tests")
    sh(root, "git", "config", "user.email", "tests@fewsam.invalid")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "micro project")
    return root


def set_params(root: Path, **changes: Any) -> None:
    """Change dotted keys of the copy's params.yaml: set_params(root, **{"train.lr": 0.01})."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        assert leaf in node, f"{key} is not a params key"
        node[leaf] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def stages_run(output: str) -> set[str]:
    """Names of the stages DVC ran, from its "Running stage 'x':" lines."""
    return set(_RUNNING.findall(output))


def repro(root: Path, *args: str) -> set[str]:
    """`dvc repro` in the copy; the set of stages it ran."""
    done = sh(root, "dvc", "repro", *args)
    ran = stages_run(done.stdout)
    skipped = set(re.findall(r"Stage '([\w-]+)' (?:didn't change|is cached)", done.stdout))
    # Every stage is accounted for: a change in DVC's wording fails here instead of passing.
    assert ran | skipped == set(STAGES), done.stdout
    return ran
