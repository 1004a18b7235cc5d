"""Evaluation values end to end: a model that answers the ground truth scores Dice 1 and HD95 0
and writes label maps equal to the label files; one that moves one organ by k voxels scores
the Dice and HD95 an independent count gives, under each protocol, in every report.

The dataset is stored the way real scans come: coronally, every axis permuted, two flipped and
slightly rotated, 0.7 x 1.3 mm in-plane and 2.5 mm slices, a non-square in-plane grid. Only the
adapted model is replaced, where `evaluate infer` and `fewsam predict` load it (`load_adapter`);
slice extraction, orientation, resizing, upsampling of the logits, the NIfTI files, scoring and
the reports are the real code. The ground truth the stand-in answers with is the test's own
array in the readers' anatomical convention (Z inferior -> superior, H anterior -> posterior, W
right -> left), and the files are written from it by the test's own index arithmetic, so a flip
or transpose anywhere between reading and writing shows.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage
from typer.testing import CliRunner

from evaluate import adapter_check
from evaluate import predict as predict_stage
from fewsam.cli import app
from train.adapter_io import read_adapter_config

CLASSES = ("liver", "spleen", "kidney")  # ids 1, 2, 3
K = len(CLASSES)
Z, H, W = 6, 16, 24  # the readers' Z x H x W; non-square in-plane
SPACING_ZHW = (2.5, 1.3, 0.7)  # mm along Z, H, W
# Both side lengths divide these, so every resize between the grids is by a whole factor and
# the stand-in's answer survives the round trip to the model's input and back exactly.
SLICE_SIZE = 48  # dataset.slice_size: 16 x 24 slices -> 48 x 48 on reading
INPUT_SIZE = 96  # model.input_size: 48 x 48 (or 16 x 24) -> 96 x 96 in front of the model
WINDOW = (-125.0, 275.0)  # the CT window of params.yaml
# Cases: one training scan (the reader needs one) and the two test cases, each with its own
# intensity offset so the stand-in can tell the slices of every case apart.
CASE_OFFSET = {"a": 0.0, "c": 8.0, "d": 16.0}
TEST_CASES = ("c", "d")
METHODS = ("prompt_free", "prompted")

# --- the scans ------------------------------------------------------------------------------


def canonical_label(case: str) -> np.ndarray:
    """Z x H x W ground truth: three asymmetric organs, every one in every case."""
    label = np.zeros((Z, H, W), np.uint8)
    # liver: an L (a vertical bar and a foot to the right), slices 1..3
    label[1:4, 2:8, 2:5] = 1
    label[1:4, 6:8, 5:10] = 1
    # spleen: a 3 x 5 x 4 box, slices 2..4 (the organ the perturbation moves along W)
    label[2:5, 9:14, 13:17] = 2
    # kidney: a staircase, wider towards the back, slices 3..5
    for r in range(1, 7):
        label[3:6, r, 14 : 16 + r] = 3
    if case == "d":  # the second test case: everything one row further back
        label = np.roll(label, 1, axis=1)
    return label


def canonical_hu(case: str, label: np.ndarray) -> np.ndarray:
    """HU image: a slice-dependent background (so slices are told apart) and bright organs."""
    z_level = -100.0 + 25.0 * np.arange(Z, dtype=np.float32)[:, None, None]
    return (z_level + CASE_OFFSET[case] + 60.0 * label).astype(np.float32)


def windowed(hu: np.ndarray) -> np.ndarray:
    low, high = WINDOW
    return np.clip((hu - low) / (high - low), 0.0, 1.0).astype(np.float32)


# The file stores the volume coronally: file axis I runs along W reversed (towards the patient's
# right), J along Z (superior), K along H reversed (anterior): axis codes (R, S, A).
def to_file(zhw: np.ndarray) -> np.ndarray:
    """Z x H x W -> the file's I x J x K: file[i, j, k] = zhw[j, H - 1 - k, W - 1 - i]."""
    return np.ascontiguousarray(np.transpose(zhw[:, ::-1, ::-1], (2, 0, 1)))


FILE_ZOOMS = (SPACING_ZHW[2], SPACING_ZHW[0], SPACING_ZHW[1])  # mm along I, J, K


def file_affine() -> np.ndarray:
    """Columns I -> +x (R), J -> +z (S), K -> +y (A), scaled, then tilted by 4 degrees."""
    columns = np.array([[FILE_ZOOMS[0], 0, 0], [0, 0, FILE_ZOOMS[2]], [0, FILE_ZOOMS[1], 0]])
    t = math.radians(4.0)
    tilt = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = tilt @ columns
    affine[:3, 3] = [-12.0, 30.5, -7.25]
    return affine


def save(path: Path, data: np.ndarray) -> None:
    img = nib.Nifti1Image(data, file_affine())
    img.set_qform(file_affine(), code=1)
    img.set_sform(file_affine(), code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def write_dataset(root: Path) -> None:
    """MSD layout: training case a, labeled test cases c and d, dataset.json naming the classes."""
    for case in CASE_OFFSET:
        split = "Tr" if case == "a" else "Ts"
        label = canonical_label(case)
        save(root / f"images{split}" / f"{case}.nii.gz", to_file(canonical_hu(case, label)))
        save(root / f"labels{split}" / f"{case}.nii.gz", to_file(label))
    labels = {"background": 0, **{name: i + 1 for i, name in enumerate(CLASSES)}}
    meta = {"channel_names": {"0": "CT"}, "labels": labels}
    (root / "dataset.json").write_text(json.dumps(meta))


def test_the_files_are_stored_as_intended(tmp_path: Path) -> None:
    """The construction itself: coronal (R, S, A), oblique by a few degrees, the zooms."""
    write_dataset(tmp_path / "data")
    img = nib.load(tmp_path / "data" / "labelsTs" / "c.nii.gz")
    assert nib.aff2axcodes(img.affine) == ("R", "S", "A")
    assert img.shape == (W, Z, H)
    assert img.header.get_zooms() == pytest.approx(FILE_ZOOMS)
    assert not np.allclose(img.affine[:3, :3], np.diag(np.diag(img.affine[:3, :3])))
    # The kidney's wide end is at the back (posterior = low K): the file holds the anatomy.
    data = np.asarray(img.dataobj)
    kidney_rows = np.flatnonzero((data == 3).any(axis=(0, 1)))  # along K, reversed rows
    assert (data == 3)[:, :, kidney_rows[0]].sum() > (data == 3)[:, :, kidney_rows[-1]].sum()


# --- the stand-in for the adapted model -----------------------------------------------------


class OracleModel(torch.nn.Module):
    """Answers the ground truth of the slices it is shown, in its own input geometry.

    `embed` finds which slice of which scan each input is: the input, averaged back over the
    whole-factor blocks of the source grid, is compared with the windowed image of every slice
    (the background level tells the slice, the organs' places that it is not shown flipped);
    an input that matches no slice, or matches it flipped, fails here. `decode` returns one-hot
    logits of that slice's ground truth resized to the input size by pixel-centre nearest
    neighbour (a whole factor: each voxel becomes a block), optionally with one class moved
    `shift` voxels along W first. Prompt points must fall inside their class.
    """

    num_classes = K
    input_size = INPUT_SIZE

    def __init__(self, shift: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device for `predict_volume`
        self.keys = list(CASE_OFFSET)
        self.labels = {c: canonical_label(c) for c in self.keys}
        self.images = np.stack([windowed(canonical_hu(c, self.labels[c])) for c in self.keys])
        self.shift = shift  # (class id, voxels along W)
        self.speck: tuple[int, int, int, int] | None = None  # (class id, z, y, x) added
        self.seen: list[tuple[str, int]] = []
        self.prompts_checked = 0

    def answer(self, case: str, z: int) -> np.ndarray:
        label = self.labels[case][z].copy()
        if self.shift is not None:
            cls, k = self.shift
            moved = np.zeros_like(label)
            moved[:, k:] = label[:, : W - k] == cls
            label[label == cls] = 0
            assert not label[moved.astype(bool)].any(), "the moved organ overlaps another"
            label[moved.astype(bool)] = cls
        if self.speck is not None and self.speck[1] == z:
            cls, _, y, x = self.speck
            assert label[y, x] == 0
            label[y, x] = cls
        return label

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        assert tuple(images.shape[1:]) == (3, INPUT_SIZE, INPUT_SIZE)
        fy, fx = INPUT_SIZE // H, INPUT_SIZE // W
        coarse = images[:, 0].reshape(-1, H, fy, W, fx).mean(dim=(2, 4)).numpy()
        found = []
        for seen in coarse:
            # Which slice: the background level (exact away from edges) of every pixel.
            error = np.median(np.abs(self.images - seen[None, None]), axis=(2, 3))  # cases x Z
            order = np.argsort(error, axis=None)
            best, second = error.flat[order[0]], error.flat[order[1]]
            assert best < 0.002 and second > 0.01, (best, second)
            case, z = (int(i) for i in np.unravel_index(order[0], error.shape))
            # Which way round: resizing blurs the organs' edges a little, a flip moves them.
            truth = self.images[case, z]
            shown = np.abs(seen - truth).mean()
            flips = [truth[::-1], truth[:, ::-1], truth[::-1, ::-1]]
            for flipped in (f for f in flips if not np.array_equal(f, truth)):
                assert shown < 0.5 * np.abs(seen - flipped).mean(), "the slice is shown flipped"
            assert shown < 0.02, shown
            found.append((case, z))
            self.seen.append((self.keys[case], z))
        return torch.tensor(found, dtype=torch.int64)

    def decode(
        self,
        emb: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        fy, fx = INPUT_SIZE // H, INPUT_SIZE // W
        logits = torch.zeros((emb.shape[0], K + 1, INPUT_SIZE, INPUT_SIZE))
        for n, (case, z) in enumerate(emb.tolist()):
            truth = self.labels[self.keys[case]][z].repeat(fy, axis=0).repeat(fx, axis=1)
            if points is not None and labels is not None:
                for (x, y), cls in zip(points[n].tolist(), labels[n].tolist(), strict=True):
                    if cls >= 1:
                        assert truth[int(y), int(x)] == cls, (case, z, x, y, cls)
                        self.prompts_checked += 1
            big = self.answer(self.keys[case], z).repeat(fy, axis=0).repeat(fx, axis=1)
            logits[n] = torch.from_numpy(np.eye(K + 1, dtype=np.float32)[big]).permute(2, 0, 1)
        return logits


@pytest.fixture
def oracle(monkeypatch: pytest.MonkeyPatch) -> OracleModel:
    """The stand-in, loaded wherever infer (through `adapter_check.load_dataset_adapter`) and
    predict load the adapter (its config is real)."""
    model = OracleModel()

    def load_adapter(adapter_dir: Path, checkpoint: str | None = None, **_: Any) -> Any:
        config = read_adapter_config(adapter_dir)
        assert config["num_classes"] == K and config["input_size"] == INPUT_SIZE
        return model, config

    monkeypatch.setattr(adapter_check, "load_adapter", load_adapter)
    monkeypatch.setattr(predict_stage, "load_adapter", load_adapter)
    return model


# --- params, adapter, commands --------------------------------------------------------------


def write_project(
    tmp_path: Path, params_dict: dict[str, Any], slice_size: int
) -> tuple[Path, Path]:
    """The dataset, a params file for it and an adapter config; returns (params, adapter)."""
    root = tmp_path / "data"
    write_dataset(root)
    data = json.loads(json.dumps(params_dict))
    data["dataset"].update(
        format="nifti", root=str(root), classes=[], modality="CT", slice_size=slice_size
    )
    data["dataset"]["window"] = list(WINDOW)
    data["model"].update(arch="tiny", checkpoint=None, input_size=INPUT_SIZE)
    data["train"].update(device="cpu", points_per_class=2)
    data["evaluate"].update(
        batch_size=4, overlays_per_case=0, max_cases=0, zero_shot_prompts=[], protocol="transunet"
    )
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {
        "kind": "fewsam-adapter",
        "arch": "tiny",
        "input_size": INPUT_SIZE,
        "num_classes": K,
        "base_checkpoint": None,
        "base_sha256": None,
        "classes": list(CLASSES),
        "channels": ["CT"],
        "dataset": {
            "slice_size": slice_size,
            "window": list(WINDOW),
            "percentiles": data["dataset"]["percentiles"],
        },
    }
    (adapter / "config.json").write_text(json.dumps(config))
    return params, adapter


def run_cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def infer_and_score(tmp_path: Path, params: Path, adapter: Path) -> dict[str, Path]:
    """`evaluate infer`, then `evaluate score` under each protocol; protocol -> report folder."""
    out = tmp_path / "reports"
    run_cli("evaluate", "infer", "-p", params, "--adapter", adapter, "--out", out)
    folders = {}
    for protocol in ("transunet", "strict"):
        folders[protocol] = tmp_path / f"scores_{protocol}"
        run_cli("evaluate", "score", "-p", params, "--pred", out / "predictions",
                "--out", folders[protocol], "--protocol", protocol)  # fmt: skip
    return folders


def read_reports(folder: Path) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
    metrics = json.loads((folder / "metrics.json").read_text())
    with (folder / "per_case.csv").open() as f:
        per_case = list(csv.DictReader(f))
    with (folder / "per_class.csv").open() as f:
        per_class = list(csv.DictReader(f))
    return metrics, per_case, per_class


def assert_same_file_content(written: Path, truth: Path, expected_ijk: np.ndarray) -> None:
    """`written` holds `expected_ijk` on `truth`'s grid: array, shape, affine, voxel type."""
    a, b = nib.load(written), nib.load(truth)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a.dataobj), expected_ijk)
    np.testing.assert_allclose(a.affine, b.affine, rtol=0, atol=1e-6)
    assert a.get_data_dtype() == np.uint8


# --- reference scores, independent of evaluate.metrics ---------------------------------------


def reference_hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None) -> float:
    """medpy's definition with distance transforms of the whole volume (evaluate.metrics uses a
    k-d tree on a cropped box): face-connected surfaces, both directions pooled, 95th pct."""
    structure = ndimage.generate_binary_structure(pred.ndim, 1)
    sp = pred ^ ndimage.binary_erosion(pred, structure, border_value=0)
    sg = gt ^ ndimage.binary_erosion(gt, structure, border_value=0)
    to_gt = ndimage.distance_transform_edt(~sg, sampling=spacing)[sp]
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)[sg]
    return float(np.percentile(np.concatenate([to_gt, to_pred]), 95))


def reference_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(pred & gt) / (np.count_nonzero(pred) + np.count_nonzero(gt))


# --- the oracle scores perfectly and writes the label files back ----------------------------


def test_oracle_scores_dice_one_and_writes_the_label_files(
    tmp_path: Path, params_dict: dict[str, Any], oracle: OracleModel
) -> None:
    params, adapter = write_project(tmp_path, params_dict, SLICE_SIZE)
    folders = infer_and_score(tmp_path, params, adapter)
    # Every slice of both test cases went through the encoder once (the prompt-free and the
    # prompted maps share its pass: `predict_volumes`); prompts were given.
    assert sorted(oracle.seen) == sorted((c, z) for c in TEST_CASES for z in range(Z))
    assert oracle.prompts_checked > 0
    labels_ts = tmp_path / "data" / "labelsTs"
    for method in METHODS:
        for case in TEST_CASES:
            written = tmp_path / "reports" / "predictions" / method / f"{case}.nii.gz"
            truth = labels_ts / f"{case}.nii.gz"
            assert_same_file_content(written, truth, np.asarray(nib.load(truth).dataobj))
    for protocol, folder in folders.items():
        metrics, per_case, per_class = read_reports(folder)
        assert metrics["protocol"] == protocol and metrics["cases"] == len(TEST_CASES)
        for key in ("dsc", "dsc_prompt_free"):
            assert metrics[key] == 1.0
        for key in ("hd95", "hd95_prompt_free"):
            assert metrics[key] == 0.0
        for method in METHODS:
            block = metrics["adapted"][method]
            assert (block["dice"], block["hd95"]) == (1.0, 0.0)
            assert block["per_class"] == {c: {"dice": 1.0, "hd95": 0.0} for c in CLASSES}
            assert block["pairs"]["both"] == len(TEST_CASES) * K
        assert {(r["case"], r["method"], r["class"]) for r in per_case} == {
            (case, m, c) for case in TEST_CASES for m in METHODS for c in CLASSES
        }
        assert len(per_case) == len(TEST_CASES) * len(METHODS) * K
        for row in per_case:
            assert (row["outcome"], float(row["dice"]), float(row["hd95"])) == ("both", 1.0, 0.0)
        assert len(per_class) == len(METHODS) * K
        for row in per_class:
            assert (float(row["dice"]), float(row["hd95"])) == (1.0, 0.0)


def test_predict_writes_the_label_file(
    tmp_path: Path, params_dict: dict[str, Any], oracle: OracleModel
) -> None:
    params, adapter = write_project(tmp_path, params_dict, SLICE_SIZE)
    data = tmp_path / "data"
    for case in TEST_CASES:
        out = tmp_path / "predicted" / f"{case}.nii.gz"
        run_cli("predict", "-p", params, "--adapter", adapter,
                "-i", data / "imagesTs" / f"{case}.nii.gz", "-o", out)  # fmt: skip
        truth = data / "labelsTs" / f"{case}.nii.gz"
        assert_same_file_content(out, truth, np.asarray(nib.load(truth).dataobj))
    assert sorted(oracle.seen) == sorted((c, z) for c in TEST_CASES for z in range(Z))


@pytest.mark.parametrize("postprocess", ["largest_component", "none"])
def test_a_stray_speck_is_removed_by_the_post_processing(
    tmp_path: Path, params_dict: dict[str, Any], oracle: OracleModel, postprocess: str
) -> None:
    """The model adds one liver voxel on a slice far from the liver: `evaluate.postprocess`
    (largest_component) removes it from both methods' files; `none` writes it."""
    oracle.speck = (1, Z - 1, H - 1, 0)
    params, adapter = write_project(tmp_path, params_dict, SLICE_SIZE)
    data = yaml.safe_load(params.read_text())
    data["evaluate"]["postprocess"] = postprocess
    params.write_text(yaml.safe_dump(data))
    run_cli("evaluate", "infer", "-p", params, "--adapter", adapter, "--out", tmp_path / "r")
    for case in TEST_CASES:
        expected = canonical_label(case)
        if postprocess == "none":
            expected[Z - 1, H - 1, 0] = 1
        for method in METHODS:
            written = tmp_path / "r" / "predictions" / method / f"{case}.nii.gz"
            truth = tmp_path / "data" / "labelsTs" / f"{case}.nii.gz"
            assert_same_file_content(written, truth, to_file(expected))


# --- a known perturbation gives known numbers ------------------------------------------------

SHIFTED_CLASS, SHIFT = 2, 2  # the spleen, moved 2 voxels along W (towards the patient's left)


def test_an_organ_moved_k_voxels_scores_the_hand_computed_values(
    tmp_path: Path, params_dict: dict[str, Any], oracle: OracleModel
) -> None:
    oracle.shift = (SHIFTED_CLASS, SHIFT)
    params, adapter = write_project(tmp_path, params_dict, 0)  # slices kept at 16 x 24
    folders = infer_and_score(tmp_path, params, adapter)
    name = CLASSES[SHIFTED_CLASS - 1]
    expected: dict[str, dict[str, tuple[float, float]]] = {"transunet": {}, "strict": {}}
    for case in TEST_CASES:
        gt_zhw = canonical_label(case)
        moved = np.stack([oracle.answer(case, z) for z in range(Z)])
        # Where the moved organ lands in the file: the test's own index arithmetic.
        written = tmp_path / "reports" / "predictions"
        for method in METHODS:
            assert_same_file_content(
                written / method / f"{case}.nii.gz",
                tmp_path / "data" / "labelsTs" / f"{case}.nii.gz",
                to_file(moved),
            )
        # Scores from the file arrays and the file's own voxel sizes (I, J, K).
        pred, gt = to_file(moved) == SHIFTED_CLASS, to_file(gt_zhw) == SHIFTED_CLASS
        dice = reference_dice(pred, gt)
        assert dice == pytest.approx((4 - SHIFT) / 4)  # a 4-voxel-wide box moved 2 along W
        mm, vox = reference_hd95(pred, gt, FILE_ZOOMS), reference_hd95(pred, gt, None)
        # The check can fail: W's 0.7 mm taken for Z's 2.5 mm would give another value.
        swapped = (FILE_ZOOMS[1], FILE_ZOOMS[0], FILE_ZOOMS[2])
        assert vox > 0 and mm != pytest.approx(reference_hd95(pred, gt, swapped))
        try:
            from medpy.metric.binary import hd95 as medpy_hd95
        except ImportError:
            pass
        else:
            assert medpy_hd95(pred, gt, voxelspacing=FILE_ZOOMS) == pytest.approx(mm)
            assert medpy_hd95(pred, gt) == pytest.approx(vox)
        expected["transunet"][case] = (dice, vox)
        expected["strict"][case] = (dice, mm)

    for protocol, folder in folders.items():
        metrics, per_case, per_class = read_reports(folder)
        by_case = expected[protocol]
        class_dice = float(np.mean([d for d, _ in by_case.values()]))
        class_hd95 = float(np.mean([h for _, h in by_case.values()]))
        for method in METHODS:
            block = metrics["adapted"][method]
            for c in CLASSES:
                want = (class_dice, class_hd95) if c == name else (1.0, 0.0)
                got = block["per_class"][c]
                assert (got["dice"], got["hd95"]) == pytest.approx(want, abs=1e-6), (method, c)
            assert block["dice"] == pytest.approx((2 + class_dice) / 3, abs=1e-6)
            assert block["hd95"] == pytest.approx(class_hd95 / 3, abs=1e-6)
        assert metrics["dsc"] == pytest.approx((2 + class_dice) / 3, abs=1e-6)
        assert metrics["hd95"] == pytest.approx(class_hd95 / 3, abs=1e-6)
        assert metrics["hd95_prompt_free"] == pytest.approx(class_hd95 / 3, abs=1e-6)
        for row in per_case:
            want = by_case[row["case"]] if row["class"] == name else (1.0, 0.0)
            got = (float(row["dice"]), float(row["hd95"]))
            assert got == pytest.approx(want, abs=1e-6), row
        assert len(per_case) == len(TEST_CASES) * len(METHODS) * K
        for row in per_class:
            want = (class_dice, class_hd95) if row["class"] == name else (1.0, 0.0)
            assert (float(row["dice"]), float(row["hd95"])) == pytest.approx(want, abs=1e-6), row
        assert {(r["class"], r["method"]) for r in per_class} == {
            (c, m) for c in CLASSES for m in METHODS
        }

    # The label files alone (spacing from their headers) give the same strict numbers.
    alone = tmp_path / "alone"
    predictions, labels = tmp_path / "reports" / "predictions", tmp_path / "data" / "labelsTs"
    run_cli("evaluate", "score", "--pred", predictions, "--gt", labels, "--out", alone,
            "--protocol", "strict")  # fmt: skip
    assert (alone / "per_case.csv").read_text() == (folders["strict"] / "per_case.csv").read_text()
    metrics, _, _ = read_reports(alone)
    assert metrics["adapted"]["prompted"]["per_class"][name]["hd95"] == pytest.approx(
        float(np.mean([h for _, h in expected["strict"].values()])), abs=1e-6
    )
