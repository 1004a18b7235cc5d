"""The label-a-few-slices path end to end, as a hospital team runs it, on a phantom whose
training labels are stripped: suggest -> (scripted) annotation -> data check -> extract ->
synthesize -> train -> infer -> score -> predict, every step through the `fewsam` command.

The base is the shipped tiny SAM, run at 64 px so that the test stays short (its prior is weak
at that size: 4 x 4 tokens); the adapted model must beat its zero-shot self on the labeled
test scans. The paper's protocol is checked
unchanged: without a manifest the same params pick the same exemplars as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import REPO
from reliability_files import torch_threads
from typer.testing import CliRunner

from fewsam.cli import app
from phantom import annotator
from synth.annotations import read_manifest

pytestmark = pytest.mark.slow

BASE = REPO / "models" / "base" / "tiny_sam.safetensors"


def fewsam(*args: str) -> str:
    """Run `fewsam ...` in-process; the output; fails the test on a non-zero exit."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"fewsam {' '.join(args)}\n{result.output}\n{result.exception!r}"
    return result.output


def write_params(root: Path, scans: Path, annotations: Path, **train: Any) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["exemplars"] = "all"
    data["phantom"].update(synapse_cases=8, synapse_size=64, synapse_slices=16)
    data["dataset"].update(format="nifti", root=str(scans), annotations=str(annotations))
    data["synth"].update(samples=240, workers=1)
    data["model"].update(arch="tiny", checkpoint=str(BASE), input_size=64)
    data["train"].update(
        max_steps=150, batch_size=8, warmup_steps=10, device="cpu", save_every=1000
    )
    data["train"].update(train)
    data["evaluate"].update(overlays_per_case=1, max_cases=2)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Phantom scans copied without training labels, and a params file pointing at them."""
    root = tmp_path_factory.mktemp("main_path")
    scans, folder = root / "scans", root / "annotate"
    params = write_params(root, scans, folder)
    fewsam("data", "phantom", "-p", str(params), "--out", str(root / "phantom"))
    annotator.unlabeled_copy(root / "phantom" / "synapse", scans)
    assert not (scans / "labelsTr").exists()
    return {"root": root, "scans": scans, "folder": folder, "params": params}


def test_the_whole_path(project: dict[str, Path]) -> None:
    root, folder, params = project["root"], project["folder"], str(project["params"])
    synapse = root / "phantom" / "synapse"
    with torch_threads(2):
        fewsam("synth", "suggest", "-p", params, "--n", "6", "--out", str(folder))
        rows = read_manifest(folder)
        assert len(rows) == 6 and all(r.round == 1 for r in rows)
        # Nothing painted yet: data check refuses the unsaved slices.
        unsaved = CliRunner().invoke(app, ["data", "check", "-p", params])
        assert unsaved.exit_code == 2 and "never saved" in unsaved.output
        assert annotator.annotate_from_truth(folder, synapse) == 6
        assert "no problems" in fewsam("data", "check", "-p", params)

        out = fewsam(
            "synth", "extract", "-p", params,
            "--out", str(root / "ex.h5"), "--csv", str(root / "ex.csv"),
        )  # fmt: skip
        assert "6 exemplars (all of the slices listed in" in out
        fewsam("synth", "run", "-p", params, "--exemplars", str(root / "ex.h5"),
               "--out", str(root / "syn.h5"))  # fmt: skip
        fewsam("train", "run", "-p", params, "--data", str(root / "syn.h5"),
               "--out", str(root / "adapter"), "--log", str(root / "log.csv"))  # fmt: skip
        fewsam("evaluate", "infer", "-p", params, "--adapter", str(root / "adapter"),
               "--out", str(root / "reports"))  # fmt: skip
        fewsam("evaluate", "score", "-p", params, "--pred", str(root / "reports/predictions"),
               "--out", str(root / "reports"))  # fmt: skip
        metrics = json.loads((root / "reports" / "metrics.json").read_text())
        assert metrics["cases"] == 2
        # The adapted model, from six labeled slices, beats zero-shot SAM (one point per organ).
        assert metrics["dsc_prompt_free"] > metrics["zero_shot_dsc"] + 0.05, metrics
        assert metrics["dsc"] > metrics["zero_shot_dsc"] + 0.05, metrics

        # Round 2: new slices where the model hesitates, drafted by the model.
        fewsam("synth", "suggest", "-p", params, "--n", "2", "--out", str(folder),
               "--strategy", "uncertain", "--adapter", str(root / "adapter"))  # fmt: skip
        rows2 = read_manifest(folder)
        assert len(rows2) == 8 and {r.round for r in rows2[6:]} == {2}
        assert not {(r.case, r.slice) for r in rows2[6:]} & {(r.case, r.slice) for r in rows}

        # New scans: predict writes label maps on each input's grid.
        test_image = sorted((project["scans"] / "imagesTs").glob("*.nii.gz"))[0]
        fewsam("predict", "-p", params, "--adapter", str(root / "adapter"),
               "--input", str(test_image), "--output", str(root / "new.nii.gz"))  # fmt: skip
    written, source = nib.load(root / "new.nii.gz"), nib.load(test_image)
    assert written.shape == source.shape
    assert np.allclose(written.affine, source.affine)
    inferred = nib.load(
        root / "reports" / "predictions" / "prompt_free" / test_image.name.replace("_0000", "")
    )
    assert np.array_equal(np.asarray(written.dataobj), np.asarray(inferred.dataobj))


def test_unlabeled_test_scans_are_segmented_not_scored(project: dict[str, Path]) -> None:
    root = project["root"]
    scans = root / "scans_unlabeled_test"
    shutil.copytree(project["scans"], scans)
    shutil.rmtree(scans / "labelsTs")
    (root / "unlabeled_test").mkdir()
    folder = root / "unlabeled_test" / "annotate"
    params = str(write_params(root / "unlabeled_test", scans, folder, max_steps=2, warmup_steps=0))
    adapter = root / "adapter_small"
    with torch_threads(2):
        fewsam("synth", "suggest", "-p", params, "--n", "2", "--out", str(folder))
        annotator.annotate_from_truth(folder, root / "phantom" / "synapse")
        fewsam("synth", "extract", "-p", params, "--out", str(root / "u_ex.h5"),
               "--csv", str(root / "u_ex.csv"))  # fmt: skip
        fewsam("synth", "run", "-p", params, "--exemplars", str(root / "u_ex.h5"),
               "--out", str(root / "u_syn.h5"))  # fmt: skip
        fewsam("train", "run", "-p", params, "--data", str(root / "u_syn.h5"),
               "--out", str(adapter), "--log", str(root / "u_log.csv"))  # fmt: skip
        fewsam("evaluate", "infer", "-p", params, "--adapter", str(adapter),
               "--out", str(root / "u_reports"))  # fmt: skip
        fewsam("evaluate", "score", "-p", params, "--pred", str(root / "u_reports/predictions"),
               "--out", str(root / "u_reports"))  # fmt: skip
    predictions = root / "u_reports" / "predictions"
    tests = sorted(p.name.replace("_0000", "") for p in (scans / "imagesTs").glob("*.nii.gz"))[:2]
    assert sorted(p.name for p in (predictions / "prompt_free").glob("*.nii.gz")) == tests
    assert not list((predictions / "prompted").glob("*.nii.gz"))
    metrics = json.loads((root / "u_reports" / "metrics.json").read_text())
    assert metrics["cases"] == 0 and metrics["dsc"] is None and metrics["zero_shot_dsc"] is None
    assert "nothing was scored" in metrics["note"]
