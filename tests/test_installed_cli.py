"""Every bad-input case of RELIABILITY.md through the installed `fewsam` console script.

The other reliability tests run `fewsam.cli.app` in this process through Typer's CliRunner. That
runner catches every exception (an unexpected one only shows as exit code 1, its traceback is
never printed), pytest captures the warnings a library prints, and the console script's own
entry point is never run. A user's terminal gets all of those. Here each case is one fresh
process of the installed command (`reliability_files.FEWSAM`), run in a project folder whose
name has spaces and non-ASCII letters, and must end with exit code 2, exactly one line on stderr
starting with `error: ` and naming the file, and no traceback on either stream.

`data check` lists every problem of a dataset, so one run holds every dataset fault (each on a
case of its own, each listed on stdout with its file); params and exemplar counts are cheap and
run in every variant. A command that loads the model spends seconds importing torch, so each row
of the table that needs one (a bad synthetic set, a checkpoint of another arch, an adapter that
does not fit, the wrong dimensionality, a damaged scan) runs one variant, and unwritable outputs
run through the commands that do not load it; the in-process tests named in RELIABILITY.md hold
every variant. The processes run a few at a time (`PARALLEL`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from dataset_files import SHAPE, btcv_image, make_brats, make_synapse, write_nifti
from reliability_files import (
    World,
    assert_installed_one_line_error,
    make_world,
    run_installed,
    write_adapter,
    write_params,
    write_scan,
)
from test_check import FAULTS
from test_reliability_bad_artifacts import _commands, _damaged_synthetic, _fake_vit_b
from test_reliability_bad_input import (
    EXEMPLAR_COUNTS,
    PARAMS_CHANGES,
    PARAMS_TEXTS,
    changed_params,
)

from synth.annotations import MANIFEST, SliceRow, label_path, write_manifest
from synth.datasets.synapse import CLASSES, TEST_IDS, TRAIN_IDS

# Processes at once: importing torch is CPU work, so more than the cores gains little.
PARALLEL = max(2, min(4, os.cpu_count() or 2))


@dataclasses.dataclass(frozen=True)
class Case:
    """One command that must fail: its arguments, what its one stderr line must hold, and for
    `data check` the (file, problem) pairs it must list on stdout, one line each."""

    args: tuple[str | Path, ...]
    fragments: tuple[str | Path, ...]
    listed: tuple[tuple[Path, str], ...] = ()
    heavy: bool = False  # loads torch: started first


Builder = Callable[[World, Path], Case]  # writes the case's inputs under the folder given


def _params_with(world: World, folder: Path, change: dict[str, Any]) -> Path:
    return write_params(folder / "params.yaml", changed_params(world.data, change))


def _check(params: Path) -> tuple[str | Path, ...]:
    return ("data", "check", "-p", params)


# ---- datasets: one `data check` for every fault, roots, BraTS ---------------------------------


def _every_dataset_fault(world: World, folder: Path) -> Case:
    """Each fault of test_check.FAULTS (all written on case 6 there) moved to a training case of
    its own, clean test cases 1 and 2, and test case 3 with an empty label."""
    root = make_synapse(folder / "ds", (1, 2))
    listed = []
    for number, (fault, (inject, message)) in zip(TRAIN_IDS, FAULTS.items(), strict=False):
        scratch = make_synapse(folder / "scratch" / re.sub(r"\W+", "_", fault), (6,))
        rel = inject(scratch)
        for kind in ("img", "label"):
            source = scratch / kind / f"{kind}0006.nii.gz"
            if source.is_file():
                shutil.copy(source, root / kind / f"{kind}{number:04d}.nii.gz")
        listed.append((root / rel.replace("0006", f"{number:04d}"), message))
    assert len(listed) == len(FAULTS)  # enough training ids for every fault
    (test_case,) = sorted(set(TEST_IDS) - {1, 2})[:1]
    empty = np.zeros(SHAPE, np.uint8)
    write_nifti(root / "img" / f"img{test_case:04d}.nii.gz", btcv_image(empty))
    label = write_nifti(root / "label" / f"label{test_case:04d}.nii.gz", empty)
    listed.append((label, "no labeled voxel (the label volume is empty)"))
    params = _params_with(world, folder, {"dataset": {"root": str(root)}})
    return Case(_check(params), (f"{root}: {len(listed)} problem(s) found",), tuple(listed))


def _brats_missing_modality(world: World, folder: Path) -> Case:
    root = make_brats(folder / "ds", hgg=2, lgg=1)
    missing = root / "LGG" / "Brats18_TEST_002_1" / "Brats18_TEST_002_1_t1ce.nii.gz"
    missing.unlink()
    params = _params_with(world, folder, {"dataset": {"root": str(root), "format": "brats"}})
    listed = ((missing, "missing modality file"),)
    return Case(_check(params), (f"{root}: 1 problem(s) found",), listed)


def _root(kind: str, problem: str) -> Builder:
    def build(world: World, folder: Path) -> Case:
        root = folder / "dataset root"
        if kind == "empty":
            root.mkdir()
        elif kind == "a file":
            root.write_text("img0001.nii.gz\n")
        params = _params_with(world, folder, {"dataset": {"root": str(root)}})
        return Case(_check(params), (f"{root}: {problem}",))

    return build


# ---- exemplar counts and params -----------------------------------------------------------------


def _exemplars(value: Any, message: str) -> Builder:
    def build(world: World, folder: Path) -> Case:
        params = _params_with(world, folder, {"exemplars": value})
        where = world.root if value == 13 else params  # too many names the dataset counted
        args = ("synth", "extract", "-p", params, "--out", folder / "ex.h5",
                "--csv", folder / "ex.csv")  # fmt: skip
        return Case(args, (f"{where}: {message}",))

    return build


def _params_change(change: dict[str, Any], message: str) -> Builder:
    def build(world: World, folder: Path) -> Case:
        params = _params_with(world, folder, change)
        return Case(_check(params), (f"{params}: {message}",))

    return build


def _params_text(text: str, message: str) -> Builder:
    def build(world: World, folder: Path) -> Case:
        params = folder / "params.yaml"
        params.write_text(text)
        return Case(_check(params), (f"{params}: {message}",))

    return build


def _params_missing(world: World, folder: Path) -> Case:
    params = folder / "nowhere.yaml"
    return Case(_check(params), (f"{params}: not found",))


# ---- files between the stages, models, scans ----------------------------------------------------


def _synthetic(kind: str) -> Builder:
    def build(world: World, folder: Path) -> Case:
        data = folder / "synthetic.h5"
        message = _damaged_synthetic(kind, world, data)
        args = ("train", "run", "-p", world.params, "--data", data,
                "--out", folder / "adapter", "--log", folder / "log.csv")  # fmt: skip
        return Case(args, (f"{data}: {message}",), heavy=True)

    return build


def _checkpoint_of_another_arch(world: World, folder: Path) -> Case:
    ckpt = folder / "sam_vit_b.pth"
    torch.save(_fake_vit_b(), ckpt)
    params = _params_with(world, folder, {"model": {"checkpoint": str(ckpt)}})
    args = ("train", "run", "-p", params, "--data", world.synthetic,
            "--out", folder / "adapter", "--log", folder / "log.csv")  # fmt: skip
    return Case(args, (f"{ckpt}: ", "do not fit model.arch tiny", "look like vit_b"), heavy=True)


def _adapter_of_other_classes(world: World, folder: Path) -> Case:
    adapter = write_adapter(folder / "adapter", world.data, classes=("liver", "spleen"))
    args = ("evaluate", "infer", "-p", world.params, "--adapter", adapter,
            "--out", folder / "reports")  # fmt: skip
    message = f"adapter classes ['liver', 'spleen'] differ from the dataset's {list(CLASSES)}"
    return Case(args, (f"{adapter / 'config.json'}: {message}",), heavy=True)


def _predict(scan_of: Callable[[Path], tuple[Path, str]]) -> Builder:
    def build(world: World, folder: Path) -> Case:
        scan, message = scan_of(folder)
        args = ("predict", "-p", world.params, "--adapter", world.adapter, "-i", scan,
                "-o", folder / "out")  # fmt: skip
        return Case(args, (f"{scan}: {message}",), heavy=True)

    return build


def _two_channel_scan(folder: Path) -> tuple[Path, str]:
    scan = write_scan(folder / "scan.nii.gz", (16, 16, 6, 2))
    return scan, "has 2 channel(s) but the model takes 1 channel (CT)"


def _truncated_scan(folder: Path) -> tuple[Path, str]:
    whole = write_scan(folder / "whole.nii.gz", (64, 64, 32)).read_bytes()
    scan = folder / "scan.nii.gz"
    scan.write_bytes(whole[:20_000])
    return scan, "truncated"


def _unwritable(command: str) -> Builder:
    def build(world: World, folder: Path) -> Case:
        blocked = folder / "blocked"
        blocked.write_text("a regular file where a folder is needed\n")
        args = tuple(_commands(world, blocked)[command])
        heavy = args[0] in ("train", "predict") or args[:2] == ("evaluate", "infer")
        return Case(args, (f"{blocked}/", "cannot be written"), heavy=heavy)

    return build


def _bad_annotations(world: World, folder: Path) -> Case:
    """A manifest naming a scan that is not a training scan, and a listed slice never saved."""
    annotations = folder / "annotations"
    annotations.mkdir()
    row = SliceRow("case0005", 2, 2, 5.0, 1, "spread", None, 1, "0" * 64, "0" * 64)
    write_manifest(annotations, [row, dataclasses.replace(row, case="case0025", rank=2)])
    params = _params_with(world, folder, {"dataset": {"annotations": str(annotations)}})
    listed = (
        (annotations / MANIFEST, "case case0025 is listed but is not a training scan"),
        (label_path(annotations, "case0005"), "never saved"),
    )
    return Case(_check(params), (f"{annotations}: 2 problem(s) found",), listed)


CASES: dict[str, Builder] = {
    "every dataset fault, an empty test label": _every_dataset_fault,
    "missing BraTS modality": _brats_missing_modality,
    "root missing": _root("missing", "dataset folder not found (set dataset.root)"),
    "root empty": _root("empty", "dataset folder is empty"),
    "root a file": _root("a file", "dataset root is not a folder"),
    **{f"exemplars {v}": _exemplars(v, m) for v, m in EXEMPLAR_COUNTS},
    **{f"params {m}": _params_change(c, m) for c, m in PARAMS_CHANGES},
    **{f"params file: {m}": _params_text(t, m) for t, m in PARAMS_TEXTS},
    "params file missing": _params_missing,
    "synthetic.h5 truncated": _synthetic("truncated"),
    "checkpoint of another arch": _checkpoint_of_another_arch,
    "adapter of other classes": _adapter_of_other_classes,
    "predict 4D with 2 channels": _predict(_two_channel_scan),
    "predict truncated scan": _predict(_truncated_scan),
    "annotations": _bad_annotations,
    **{
        f"unwritable {c}": _unwritable(c)
        for c in ("extract --csv", "synth run --out", "evaluate score --out")
    },
}


def _selected(request: pytest.FixtureRequest) -> list[str]:
    """The cases whose test this session runs (all of them unless some were deselected)."""
    names = {
        item.callspec.params["name"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    return [name for name in CASES if name in names] or list(CASES)


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    params_dict: dict[str, Any],
) -> dict[str, tuple[Case, subprocess.CompletedProcess[str]]]:
    """The selected cases built, then run by the installed command, each in its own folder."""
    base = tmp_path_factory.mktemp("installed") / "projet d'essai ñ"
    (base / "world").mkdir(parents=True)
    world = make_world(base / "world", params_dict)
    built: dict[str, tuple[Case, Path]] = {}
    for name in _selected(request):
        folder = base / re.sub(r"\W+", "_", name)
        folder.mkdir()
        built[name] = (CASES[name](world, folder), folder)
    order = sorted(built, key=lambda name: not built[name][0].heavy)  # the slow ones first
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {
            name: pool.submit(run_installed, *built[name][0].args, cwd=built[name][1])
            for name in order
        }
        return {name: (built[name][0], futures[name].result()) for name in built}


@pytest.mark.parametrize("name", list(CASES))
def test_installed_command_fails_in_one_line(
    outcomes: dict[str, tuple[Case, subprocess.CompletedProcess[str]]], name: str
) -> None:
    case, proc = outcomes[name]
    assert_installed_one_line_error(proc, *case.fragments)
    for path, problem in case.listed:
        lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{path}: ")]
        assert len(lines) == 1 and problem in lines[0], (path, problem, proc.stdout)
    if case.listed:  # nothing else listed: the problems, then the dataset's summary line
        assert len(proc.stdout.splitlines()) == len(case.listed) + 1, proc.stdout
