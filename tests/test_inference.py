"""Volume inference: a model that returns the ground truth scores Dice 1; prompts; the stages."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from sam_helpers import write_checkpoint
from typer.testing import CliRunner

from core.params import LoraParams, ModelParams, parse_params
from evaluate.inference import gt_prompts, predict_volume, predict_volumes
from evaluate.protocols import score_case
from fewsam.cli import app
from train.adapter_io import save_adapter
from train.model import build_fewsam

K = 3


class OracleModel:
    """FewSam stand-in whose logits are the ground truth written into the image.

    The test volumes carry the mask of class c as channel c - 1 (three channels for K = 3), so
    `embed` keeps the image and `decode` turns it into logits (background 0.5, class c its
    mask): a perfect segmenter that still goes through every step of `predict_volume`
    (resizing to the input, batching, upsampling back, argmax).
    """

    num_classes = K

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size
        self.calls: list[tuple[int, Any, Any]] = []

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        assert images.shape[1:] == (3, self.input_size, self.input_size)
        return images

    def decode(
        self,
        emb: torch.Tensor,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.calls.append((emb.shape[0], points, labels))
        background = torch.full_like(emb[:, :1], 0.5)
        return torch.cat([background, emb], dim=1)


def labeled_volume(z: int = 7, h: int = 32, w: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of classes 1..3 on some slices (slice 0 and the last one empty)."""
    label = np.zeros((z, h, w), np.uint8)
    label[1:4, 4:16, 4:14] = 1
    label[2:6, 18:28, 6:20] = 2
    label[3:6, 6:12, 20:30] = 3
    image = np.stack([(label == c).astype(np.float32) for c in range(1, K + 1)])
    return image, label


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_ground_truth_model_scores_dice_one(batch_size: int) -> None:
    image, label = labeled_volume()
    pred = predict_volume(OracleModel(32), image, batch_size)
    assert pred.dtype == np.uint8 and pred.shape == label.shape
    scores = score_case(pred, label, K, (2.5, 0.7, 0.7), "strict")
    assert [s.dice for s in scores] == [1.0, 1.0, 1.0]
    assert [s.hd95 for s in scores] == [0.0, 0.0, 0.0]


def test_logits_come_back_to_the_slice_size() -> None:
    # 32 x 32 slices through a 64 px model and back: shape kept, segmentation nearly exact.
    image, label = labeled_volume()
    pred = predict_volume(OracleModel(64), image, 4)
    assert pred.shape == label.shape
    scores = score_case(pred, label, K, (1.0, 1.0, 1.0), "transunet")
    assert min(s.dice for s in scores) > 0.9
    bigger = predict_volume(OracleModel(64), image, 4, out_hw=(48, 40))
    assert bigger.shape == (7, 48, 40)


def test_prompted_mode_passes_points_inside_their_class() -> None:
    image, label = labeled_volume()
    model = OracleModel(64)
    predict_volume(model, image, 2, prompts=gt_prompts(label, K, 2, seed=0, case="c1"))
    z = 0
    for n, points, labels in model.calls:
        if points is None:  # a batch of slices without any class
            assert not label[z : z + n].any()
        else:
            assert points.shape[:2] == labels.shape and points.shape[0] == n
            for i in range(n):
                present = set(np.unique(label[z + i])) - {0}
                real = labels[i] >= 1
                assert sorted(set(labels[i][real].tolist())) == sorted(present)
                assert int(real.sum()) == 2 * len(present)
                for (x, y), cls in zip(points[i][real], labels[i][real], strict=True):
                    # input pixels (64 px) -> slice pixels (32 px): halve the coordinates
                    assert label[z + i, int(y / 2), int(x / 2)] == cls
        z += n
    assert z == label.shape[0]


def test_prompts_do_not_depend_on_batch_size() -> None:
    _, label = labeled_volume()
    a = gt_prompts(label, K, 3, seed=5, case="case0001")
    b = gt_prompts(label, K, 3, seed=5, case="case0001")
    other = gt_prompts(label, K, 3, seed=5, case="case0002")
    assert np.array_equal(a(3)[0], b(3)[0])
    assert not np.array_equal(a(3)[0], other(3)[0])


def test_real_model_runs_and_batches_consistently() -> None:
    torch.manual_seed(0)
    model = build_fewsam(
        ModelParams("tiny", None, 64), LoraParams(2, 2.0, 0.0, True, True, "lora", False), K
    )
    image = np.random.default_rng(0).random((1, 4, 40, 36)).astype(np.float32)
    one = predict_volume(model, image, 1)
    four = predict_volume(model, image, 4)
    assert one.shape == (4, 40, 36) and one.max() <= K
    assert np.mean(one == four) > 0.99  # float summation order may flip a near-tie


def test_one_encoder_pass_gives_the_prompt_free_and_the_prompted_maps() -> None:
    """`predict_volumes` (what `evaluate infer` runs) embeds each batch once for both modes and
    gives each mode the map `predict_volume` gives it alone, on a real (tiny) model."""
    torch.manual_seed(0)
    model = build_fewsam(
        ModelParams("tiny", None, 64), LoraParams(2, 2.0, 0.0, True, True, "lora", False), K
    )
    image, label = labeled_volume(z=5, h=40, w=36)
    image = (image + np.random.default_rng(1).random(image.shape)).astype(np.float32) / 2
    prompts = gt_prompts(label, K, 2, seed=0, case="c1")
    embeds: list[int] = []
    embed = model.embed
    model.embed = lambda x: (embeds.append(x.shape[0]), embed(x))[1]  # type: ignore[method-assign]
    free, prompted = predict_volumes(model, image, 2, [None, prompts])
    assert embeds == [2, 2, 1]  # one pass over the 5 slices, not two
    del model.embed
    assert np.array_equal(free, predict_volume(model, image, 2))
    assert np.array_equal(prompted, predict_volume(model, image, 2, prompts=prompts))
    assert not np.array_equal(free, prompted)  # the prompts reach the decoder


# --- the stage, end to end on a tiny nnU-Net style dataset ------------------------------------


def write_dataset(root: Path) -> None:
    """Two training and two test cases, 40 x 36 x 6, with a non-trivial affine."""
    affine = np.array([[0.0, -0.8, 0, 40], [0.9, 0, 0, -20], [0, 0, 2.5, 7], [0, 0, 0, 1]])
    rng = np.random.default_rng(1)
    for split, cases in (("Tr", ("a", "b")), ("Ts", ("c", "d"))):
        (root / f"images{split}").mkdir(parents=True)
        (root / f"labels{split}").mkdir(parents=True)
        for case in cases:
            label_zyx = np.zeros((6, 36, 40), np.uint8)
            label_zyx[1:4, 5:15, 8:20] = 1
            label_zyx[2:5, 20:30, 22:34] = 2
            hu = label_zyx * 120.0 - 50.0 + rng.normal(0, 10, label_zyx.shape)
            ijk = np.transpose(hu, (2, 1, 0)).astype(np.float32)
            nib.save(nib.Nifti1Image(ijk, affine), root / f"images{split}" / f"{case}.nii.gz")
            lab = np.transpose(label_zyx, (2, 1, 0))
            nib.save(nib.Nifti1Image(lab, affine), root / f"labels{split}" / f"{case}.nii.gz")
    info = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2}}
    (root / "dataset.json").write_text(json.dumps(info))


def stage_params(params_dict: dict[str, Any], root: Path, **evaluate: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(params_dict))  # deep copy
    data["dataset"].update(format="nifti", root=str(root), classes=[], modality="CT")
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(device="cpu")
    data["evaluate"].update(batch_size=4, overlays_per_case=1, max_cases=0, **evaluate)
    return data


def write_adapter(folder: Path, params: Any, classes: list[str], channels: list[str]) -> None:
    from core.params import to_dict

    torch.manual_seed(0)
    model = build_fewsam(params.model, params.lora, len(classes))
    config = {
        "classes": classes,
        "channels": channels,
        "dataset": to_dict(params.dataset),
        "train": to_dict(params.train),
    }
    save_adapter(model, folder, config)


def _run(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _evaluate_stages(tmp_path: Path, data: dict[str, Any], out: Path) -> str:
    """`fewsam evaluate infer`, then `score`, with params `data` and a random 2-class adapter;
    returns the output of `score`."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    write_adapter(tmp_path / "adapter", parse_params(data), ["liver", "spleen"], ["CT"])
    _run("evaluate", "infer", "-p", params_file, "--adapter", tmp_path / "adapter", "--out", out)
    return _run("evaluate", "score", "-p", params_file, "--pred", out / "predictions",
                "--out", out)  # fmt: skip


def test_evaluate_stages_write_every_report(tmp_path: Path, params_dict: dict[str, Any]) -> None:
    write_dataset(tmp_path / "data")
    data = stage_params(
        params_dict, tmp_path / "data", protocol="strict", zero_shot_prompts=["box", "point"]
    )
    out = tmp_path / "reports"
    output = _evaluate_stages(tmp_path, data, out)
    assert "mean" in output  # the per-class table
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "strict" and metrics["cases"] == 2
    assert set(metrics["adapted"]) == {"prompt_free", "prompted"}
    assert set(metrics["zero_shot"]["per_class"]) == {"liver", "spleen"}
    assert set(metrics["zero_shot_box"]["per_class"]) == {"liver", "spleen"}
    assert list(metrics)[:8] == [
        "dsc", "hd95", "dsc_prompt_free", "hd95_prompt_free", "zero_shot_dsc", "zero_shot_hd95",
        "zero_shot_box_dsc", "zero_shot_box_hd95",
    ]  # fmt: skip
    methods = ["prompt_free", "prompted", "zero_shot", "zero_shot_box"]  # point before box
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert len(rows) == 2 * 4 * 2  # cases x methods x classes
    assert [r["method"] for r in rows[::4]] == methods
    per_class = list(csv.DictReader((out / "per_class.csv").open()))
    assert {(r["class"], r["method"]) for r in per_class} == {
        (c, m) for c in ("liver", "spleen") for m in methods
    }
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["c_z002.png", "d_z002.png"]
    source = nib.load(tmp_path / "data" / "labelsTs" / "c.nii.gz")
    for method in methods:
        written = nib.load(out / "predictions" / method / "c.nii.gz")
        assert written.shape == source.shape
        assert np.allclose(written.affine, source.affine)
        assert written.get_data_dtype() == np.uint8
    # The same folders scored against the label files alone give the same reports.
    alone = tmp_path / "alone"
    _run("evaluate", "score", "--pred", out / "predictions", "--gt",
         tmp_path / "data" / "labelsTs", "--out", alone, "--protocol", "strict")  # fmt: skip
    for name in ("metrics.json", "per_case.csv", "per_class.csv"):
        assert (alone / name).read_bytes() == (out / name).read_bytes(), name


def test_infer_refuses_adapter_of_other_classes(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    write_dataset(tmp_path / "data")
    data = stage_params(params_dict, tmp_path / "data", zero_shot_prompts=[])
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    write_adapter(tmp_path / "adapter", parse_params(data), ["liver", "kidney"], ["CT"])
    result = CliRunner().invoke(
        app, ["evaluate", "infer", "-p", str(params_file), "--adapter", str(tmp_path / "adapter"),
              "--out", str(tmp_path / "reports")],
    )  # fmt: skip
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.endswith(
        "adapter classes ['liver', 'kidney'] differ from the dataset's ['liver', 'spleen']"
    ), line
    assert not (tmp_path / "reports" / "predictions").exists()


def test_infer_refuses_adapter_of_another_slice_size(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    write_dataset(tmp_path / "data")
    data = stage_params(params_dict, tmp_path / "data", zero_shot_prompts=[])
    write_adapter(tmp_path / "adapter", parse_params(data), ["liver", "spleen"], ["CT"])
    data["dataset"]["slice_size"] = 32
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(
        app, ["evaluate", "infer", "-p", str(params_file), "--adapter", str(tmp_path / "adapter"),
              "--out", str(tmp_path / "reports")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "dataset.slice_size 0, params say 32" in result.output


def test_infer_and_predict_write_the_same_maps_on_the_source_grid(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    """Slices resized on reading (40 x 36 source, 32 px slices): `evaluate infer` and `fewsam
    predict` bring the logits back to the source grid the same way, voxel for voxel."""
    write_dataset(tmp_path / "data")
    data = stage_params(params_dict, tmp_path / "data", zero_shot_prompts=["point", "box"])
    checkpoint = write_checkpoint(tmp_path / "tiny.safetensors", input_size=64)
    data["model"]["checkpoint"] = str(checkpoint)
    data["dataset"]["slice_size"] = 32
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    adapter = tmp_path / "adapter"
    write_adapter(adapter, parse_params(data), ["liver", "spleen"], ["CT"])
    out = tmp_path / "reports"
    _run("evaluate", "infer", "-p", params_file, "--adapter", adapter, "--out", out)
    image = tmp_path / "data" / "imagesTs" / "c.nii.gz"
    predicted = tmp_path / "predicted" / "c.nii.gz"
    _run("predict", "-p", params_file, "--adapter", adapter, "-i", image, "-o", predicted)
    source = nib.load(image)
    inferred = nib.load(out / "predictions" / "prompt_free" / "c.nii.gz")
    alone = nib.load(predicted)
    for written in (inferred, alone):
        assert written.shape == source.shape == (40, 36, 6)
        assert np.allclose(written.affine, source.affine)
    labels = np.asarray(inferred.dataobj)
    assert len(np.unique(labels)) > 1  # a real segmentation, not a constant map
    assert np.array_equal(labels, np.asarray(alone.dataobj))
    for method in ("prompted", "zero_shot", "zero_shot_box"):
        assert nib.load(out / "predictions" / method / "c.nii.gz").shape == source.shape


def test_infer_without_overlays_still_creates_every_output(
    tmp_path: Path, params_dict: dict[str, Any]
) -> None:
    """DVC lists reports/overlays as an output: it must exist even when no overlay is asked for."""
    write_dataset(tmp_path / "data")
    data = stage_params(params_dict, tmp_path / "data", zero_shot_prompts=[])
    data["evaluate"]["overlays_per_case"] = 0
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    write_adapter(tmp_path / "adapter", parse_params(data), ["liver", "spleen"], ["CT"])
    out = tmp_path / "reports"
    (out / "overlays").mkdir(parents=True)
    (out / "overlays" / "old_z001.png").write_bytes(b"stale")  # from an earlier run
    (out / "predictions" / "zero_shot").mkdir(parents=True)  # zero-shot of an earlier run
    (out / "predictions" / "zero_shot_box").mkdir()
    _run("evaluate", "infer", "-p", params_file, "--adapter", tmp_path / "adapter", "--out", out)
    assert (out / "overlays").is_dir() and not any((out / "overlays").iterdir())
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["prompt_free", "prompted"]
