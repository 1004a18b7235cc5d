"""Extraction from annotated slices, and the paper's protocol left as it was.

With a manifest in `dataset.annotations`, the exemplars are exactly the listed slices with the
painted labels (an all-background one marked `negative` included: a negative exemplar), `exemplars: N` spreads N
of them, and the background pool never takes a listed slice. Without one, the default params on
the default phantom pick the very exemplars committed in data/exemplars.csv.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import REPO

from core.errors import ParamsError
from core.params import parse_params
from phantom import annotator
from phantom import generate as phantom
from suggest import run as suggest
from synth import exemplars
from synth.annotations import canonical_z, label_path, read_manifest, write_manifest
from synth.datasets import open_dataset


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small unlabeled phantom with 3 annotated slices, the middle one painted empty."""
    base = tmp_path_factory.mktemp("annotated")
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["phantom"].update(synapse_cases=6, synapse_size=32, synapse_slices=10)
    data["dataset"].update(format="nifti", root=str(base / "scans"), annotations=str(base / "ann"))
    data["exemplars"] = "all"
    data["synth"]["pool_per_case"] = 4
    params = parse_params(data)
    phantom.run(params, base / "ph")
    annotator.unlabeled_copy(base / "ph" / "synapse", base / "scans")
    suggest.run(params, base / "ann", 3, "spread")
    annotator.annotate_from_truth(base / "ann", base / "ph" / "synapse")
    rows = read_manifest(base / "ann")
    negative = rows[1]
    path = label_path(base / "ann", negative.case)
    img = nib.load(path)
    volume = np.asarray(img.dataobj).copy()
    volume[:, :, negative.slice] = 0  # the person found nothing there, and saved
    out = nib.Nifti1Image(volume, img.affine, img.header)
    out.header["descrip"] = b"painted"
    nib.save(out, path)
    marked = [dataclasses.replace(r, negative=True) if r == negative else r for r in rows]
    write_manifest(base / "ann", marked)  # and said so in its row
    return {"base": base, "data": data, "rows": rows, "negative": negative}


def test_listed_slices_are_the_exemplars(annotated: dict[str, Any], tmp_path: Path) -> None:
    params = parse_params(annotated["data"])
    ex = exemplars.run(params, tmp_path / "ex.h5", tmp_path / "ex.csv")
    reader = open_dataset(params.dataset, params.seed)
    want = set()
    for row in annotated["rows"]:
        want.add((row.case, canonical_z(row.slice, reader.load(row.case, resize=False))))
    got = {(c, int(z)) for c, z in zip(ex.case, ex.slice, strict=True)}
    assert got == want
    neg = annotated["negative"]
    i = [k for k, c in enumerate(ex.case) if c == neg.case][0]
    assert not ex.label[i].any()  # the negative exemplar is in the set, all background
    assert sum(1 for k in range(len(ex.case)) if ex.label[k].any()) == 2
    # The pool never takes a listed slice, and the training labels were never needed.
    pool = {(c, int(z)) for c, z in zip(ex.pool_case, ex.pool_slice, strict=True)}
    assert pool and not pool & want
    assert not (Path(params.dataset.root) / "labelsTr").exists()


def test_exemplars_n_spreads_over_the_listed_slices(
    annotated: dict[str, Any], tmp_path: Path
) -> None:
    data = copy.deepcopy(annotated["data"])
    data["exemplars"] = 2
    ex = exemplars.run(parse_params(data), tmp_path / "ex.h5", tmp_path / "ex.csv")
    listed = {r.case for r in annotated["rows"]}
    assert len(ex.case) == 2 and set(ex.case) <= listed
    data["exemplars"] = 4
    with pytest.raises(ParamsError, match="ann"):
        exemplars.run(parse_params(data), tmp_path / "ex4.h5", tmp_path / "ex4.csv")


@pytest.mark.slow
def test_default_params_pick_the_committed_exemplars(
    params_dict: dict[str, Any], tmp_path: Path
) -> None:
    """The paper's protocol is unchanged by the annotation path (no manifest: as before)."""
    data = copy.deepcopy(params_dict)
    data["dataset"]["root"] = str(tmp_path / "ph" / "synapse")
    data["dataset"]["annotations"] = str(tmp_path / "no_annotations")
    params = parse_params(data)
    phantom.run(params, tmp_path / "ph")
    exemplars.run(params, tmp_path / "ex.h5", tmp_path / "ex.csv")
    assert (tmp_path / "ex.csv").read_text() == (REPO / "data" / "exemplars.csv").read_text()
