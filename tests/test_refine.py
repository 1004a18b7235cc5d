"""SAM as the refiner: boxes from a label map's largest components, trust rules, `--refine`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from sam_helpers import write_checkpoint
from test_predict import make_adapter, write_scan
from typer.testing import CliRunner

from annotate.engines import Answer, Embedding, Prompt, open_engine
from core.params import parse_params, to_dict
from core.volume import to_zyx
from evaluate.predict import Scan, read_scan
from evaluate.predict import run as predict_run
from evaluate.refine import (
    Proposal,
    Trust,
    assemble,
    component_box,
    open_refiner,
    propose_volumes,
    refine_volumes,
)
from fewsam.cli import app


class BoxFiller:
    """An engine whose mask is its box, shrunk by one pixel; score = 1 / (1 + box area)."""

    name = "box-filler"

    def __init__(self) -> None:
        self.embedded = 0
        self.boxes: list[tuple[int, tuple[float, ...]]] = []

    def embed(self, image: np.ndarray) -> Embedding:
        self.embedded += 1
        return Embedding(torch.zeros(1), (int(image.shape[1]), int(image.shape[2])))

    def predict(self, emb: Embedding, prompt: Prompt, mask_input: Any) -> Answer:
        assert prompt.box is not None
        self.boxes.append((prompt.cls, prompt.box))
        x0, y0, x1, y1 = (int(v) for v in prompt.box)
        mask = np.zeros(emb.hw, bool)
        mask[y0 + 1 : y1, x0 + 1 : x1] = True
        return Answer(mask, 1.0 / (1 + (x1 - x0 + 1) * (y1 - y0 + 1)), None)


def test_box_of_the_largest_component_grown_and_clipped() -> None:
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:16] = True  # 24 pixels: rows 5..8, columns 10..15
    mask[0, 0] = mask[19, 29] = True  # specks that must not stretch the box
    assert component_box(mask, 0) == (10.0, 5.0, 15.0, 8.0)
    assert component_box(mask, 3) == (7.0, 2.0, 18.0, 11.0)
    assert component_box(mask, 50) == (0.0, 0.0, 29.0, 19.0)


def test_assemble_replaces_only_trusted_classes() -> None:
    label = np.zeros((6, 6), np.uint8)
    label[0:2, 0:2] = 1
    label[3:6, 3:6] = 2
    one = np.zeros((6, 6), bool)
    one[0:3, 0:3] = True  # grows class 1
    two = np.zeros((6, 6), bool)
    two[4:6, 4:6] = True  # shrinks class 2
    proposals = [Proposal(1, one, 0.9, 0.6), Proposal(2, two, 0.5, 0.6)]
    both = assemble(label, proposals, Trust())
    assert (both == 1).sum() == 9 and (both == 2).sum() == 4
    by_score = assemble(label, proposals, Trust(min_score=0.8))
    assert (by_score == 1).sum() == 9 and np.array_equal(by_score == 2, label == 2)
    by_agreement = assemble(label, proposals, Trust(min_agreement=0.7))
    assert np.array_equal(by_agreement, label)
    # Where trusted masks overlap, the higher score wins.
    over = assemble(label, [Proposal(1, one, 0.2, 1.0), Proposal(2, one, 0.3, 1.0)], Trust())
    assert (over[0:3, 0:3] == 2).all() and (over == 1).sum() == 0


def test_each_marked_slice_embedded_once_for_every_label_map() -> None:
    image = np.zeros((1, 4, 16, 16), np.float32)
    a = np.zeros((4, 16, 16), np.uint8)
    a[1, 2:8, 3:9] = 1
    a[1, 10:12, 10:12] = 1  # a second, smaller component of class 1
    a[1, 12:15, 0:4] = 2
    b = np.zeros_like(a)
    b[2, 5:10, 5:10] = 2
    engine = BoxFiller()
    out = propose_volumes(engine, image, {"a": a, "b": b}, 2, (0, 2))
    assert engine.embedded == 2  # slices 1 and 2; 0 and 3 are empty in both
    assert [len(p) for p in out[("a", 0)]] == [0, 2, 0, 0]
    assert (1, (3.0, 2.0, 8.0, 7.0)) in engine.boxes and (1, (1.0, 0.0, 10.0, 9.0)) in engine.boxes
    refined = refine_volumes(BoxFiller(), image, {"a": a, "b": b}, 2, 0, Trust())
    expected = a.copy()
    expected[1][a[1] == 1] = 0
    expected[1, 3:7, 4:8] = 1  # the box of the largest component, shrunk by one pixel
    expected[1][a[1] == 2] = 0
    expected[1, 13:14, 1:3] = 2
    assert np.array_equal(refined["a"], expected)
    assert (refined["b"][2] == 2).sum() == 9


def test_batched_boxes_answer_as_one_box_at_a_time(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "base.safetensors")
    engine = open_engine("base", "tiny", str(ckpt), 64, 2)
    image = np.random.default_rng(0).random((1, 40, 48), dtype=np.float32)
    emb = engine.embed(image)
    boxes = [(3.0, 4.0, 20.0, 30.0), (10.0, 0.0, 47.0, 39.0), (30.0, 20.0, 33.0, 22.0)]
    masks, scores = engine.predict_boxes(emb, boxes)
    for i, box in enumerate(boxes):
        one = engine.predict(emb, Prompt(1, box=box), None)
        assert np.array_equal(masks[i], one.mask)
        assert scores[i] == pytest.approx(one.score, abs=1e-5)
    assert masks.any()


@pytest.fixture
def params_file(tmp_path: Path, params_dict: dict[str, Any]) -> Path:
    data = json.loads(json.dumps(params_dict))
    data["model"].update(arch="tiny", checkpoint=None, input_size=64)
    data["train"].update(device="cpu")
    # A random base predicts IoUs of any sign: trust every mask.
    data["evaluate"].update(batch_size=2, refine_margin=1, refine_min_score=-1e9)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_predict_refine_equals_refining_the_unrefined_label_map(
    tmp_path: Path, params_file: Path
) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, ["CT"], 0)
    write_scan(tmp_path / "in" / "scan.nii.gz")
    params = parse_params(yaml.safe_load(params_file.read_text()))
    plain = predict_run(params, adapter, tmp_path / "in", tmp_path / "plain")[0]
    result = CliRunner().invoke(
        app,
        ["predict", "--adapter", str(adapter), "-i", str(tmp_path / "in"), "-o",
         str(tmp_path / "refined"), "-p", str(params_file), "--refine", "base"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    unrefined = np.asarray(nib.load(plain).dataobj)
    refined = np.asarray(nib.load(tmp_path / "refined" / "scan.nii.gz").dataobj)
    assert unrefined.any()
    scan = Scan("scan", (tmp_path / "in" / "scan.nii.gz",))
    volume = read_scan(scan, ["CT"], to_dict(params.dataset))
    engine = open_refiner("base", params.model, 2)
    label = to_zyx(unrefined, volume.affine)
    want = refine_volumes(engine, volume.image, {"x": label}, 2, 1, Trust(-1e9))["x"]
    assert np.array_equal(to_zyx(refined, volume.affine), want)
    assert not np.array_equal(want, label)


def test_predict_refuses_an_unknown_refiner(tmp_path: Path, params_file: Path) -> None:
    adapter = make_adapter(tmp_path / "adapter", params_file, ["CT"], 0)
    write_scan(tmp_path / "in" / "scan.nii.gz")
    result = CliRunner().invoke(
        app,
        ["predict", "--adapter", str(adapter), "-i", str(tmp_path / "in"), "-o",
         str(tmp_path / "out"), "-p", str(params_file), "--refine", "medsam2"],
    )  # fmt: skip
    assert result.exit_code != 0 and "--refine" in result.output
    assert not (tmp_path / "out").exists()
