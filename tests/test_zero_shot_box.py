"""Zero-shot SAM with box prompts (`evaluate.zero_shot_prompts`): the tight boxes, SAM's own box
path, one encoder pass for both prompt kinds, the params, the stage's files and the reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from test_inference import stage_params, write_adapter, write_dataset
from typer.testing import CliRunner

from core.errors import ParamsError
from core.params import parse_params
from evaluate import reports
from evaluate.protocols import Summary
from evaluate.zero_shot import assemble, tight_boxes, zero_shot_volume, zero_shot_volumes
from fewsam.cli import app
from fewsam.exp_records import ExpRecord
from fewsam.paper_report import markdown
from fewsam.report_rows import ZERO_SHOT, ZERO_SHOT_BOX, table_rows
from train.base_weights import load_sam
from train.inputs import to_sam_input

PRETRAINED = Path(__file__).resolve().parents[1] / "models" / "base" / "tiny_sam.safetensors"


@pytest.fixture(scope="module")
def sam() -> torch.nn.Module:
    # The pretrained tiny SAM (in the repository): real masks, neither empty nor the whole slice.
    return load_sam("tiny", PRETRAINED, 64)


def scene(size: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """size x size uint8 pixels with two bright objects and their label (classes 1 and 2)."""
    rng = np.random.default_rng(seed)
    s = size / 64
    r = lambda a, b: slice(round(a * s), round(b * s))  # noqa: E731
    image = np.full((size, size), 40.0)
    label = np.zeros((size, size), np.uint8)
    image[r(12, 40), r(20, 50)] = 200.0
    label[r(12, 40), r(20, 50)] = 1
    image[r(44, 60), r(4, 22)] = 130.0
    label[r(44, 60), r(4, 22)] = 2
    pixels = np.clip(image + rng.normal(0.0, 8.0, image.shape), 0, 255).astype(np.uint8)
    return pixels, label


# --- the boxes --------------------------------------------------------------------------------


def test_tight_boxes_by_hand() -> None:
    label = np.zeros((16, 16), np.uint8)
    label[3:8, 5:11] = 1  # rows 3..7, columns 5..10
    label[12:15, 0:2] = 3  # rows 12..14, columns 0..1 ...
    label[0, 15] = 3  # ... and a second piece in the top right corner: one box around both
    boxes, classes = tight_boxes(label, num_classes=3, size=16)
    assert classes.tolist() == [1, 3] and boxes.dtype == np.float32
    # SAM's convention (SamPredictor, amg.batched_mask_to_box, MedSAM): x0, y0, x1, y1 are the
    # first and last column and row of the class; the prompt encoder adds 0.5 itself.
    assert boxes.tolist() == [[5, 3, 10, 7], [0, 0, 15, 14]]
    # Twice the size: every source pixel is 2 x 2 input pixels, the box spans all of them.
    assert tight_boxes(label, 3, 32)[0].tolist() == [[10, 6, 21, 15], [0, 0, 31, 29]]
    # Half the size: the input pixels the class overlaps (columns 5..10 = [2.5, 5.5) -> 2..5).
    assert tight_boxes(label, 3, 8)[0].tolist() == [[2, 1, 5, 3], [0, 0, 7, 7]]
    # Not square (20 x 24 -> 12 x 12): rows and columns scale apart.
    tall = np.zeros((20, 24), np.uint8)
    tall[3:8, 5:11] = 2
    boxes, classes = tight_boxes(tall, 2, 12)
    assert classes.tolist() == [2]
    assert boxes.tolist() == [[2, 1, 5, 4]]  # columns [2.5, 5.5) -> 2..5, rows [1.8, 4.8) -> 1..4
    empty_boxes, empty_classes = tight_boxes(np.zeros((4, 4), np.uint8), 3, 8)
    assert empty_boxes.shape == (0, 4) and empty_classes.shape == (0,)


@pytest.mark.parametrize(("h", "w", "size"), [(16, 16, 16), (20, 24, 12), (24, 20, 64), (7, 9, 5)])
def test_tight_boxes_cover_exactly_the_input_pixels_the_class_overlaps(
    h: int, w: int, size: int
) -> None:
    rng = np.random.default_rng(h * w + size)
    for _ in range(20):
        label = np.zeros((h, w), np.uint8)
        r0, c0 = rng.integers(0, h), rng.integers(0, w)
        label[r0 : r0 + rng.integers(1, h), c0 : c0 + rng.integers(1, w)] = 1
        rows, cols = np.nonzero(label)

        # Input pixel i spans [i, i + 1) * length / size of the source; it overlaps the class
        # when that span meets [first, last + 1).
        def overlapped(first: int, last: int, length: int) -> list[int]:
            return [
                i
                for i in range(size)
                if i * length < (last + 1) * size and (i + 1) * length > first * size
            ]

        xs, ys = overlapped(cols.min(), cols.max(), w), overlapped(rows.min(), rows.max(), h)
        (box,), _ = tight_boxes(label, 1, size)
        assert box.tolist() == [xs[0], ys[0], xs[-1], ys[-1]]


# --- the box path against SAM ------------------------------------------------------------------


def test_box_path_matches_segment_anythings_own_predictor(sam: torch.nn.Module) -> None:
    # SamPredictor is SAM's reference path (resizing, normalization, box transform, single-mask
    # output, postprocessing): one class, its tight box, the same mask must come out.
    from segment_anything import SamPredictor

    pixels, label = scene(64)
    label[label == 2] = 0  # one class
    ours = zero_shot_volume(
        sam, (pixels / 255.0).astype(np.float32)[None, None], label[None], 1, 1, prompt="box"
    )
    predictor = SamPredictor(sam)
    predictor.set_image(np.repeat(pixels[..., None], 3, axis=2))
    box = np.array([20, 12, 49, 39])  # columns 20..49, rows 12..39, by hand
    masks, iou, _ = predictor.predict(box=box, multimask_output=False)
    assert masks.shape == (1, 64, 64)
    mask = masks[0]
    assert 0 < mask.sum() < mask.size  # a real mask, neither empty nor everything
    assert (mask & (label == 1)).sum() > (mask & (label == 0)).sum()  # on the boxed object
    assert np.array_equal(ours[0] == 1, mask)
    assert set(np.unique(ours)) == {0, 1}


def test_box_path_is_the_prompt_encoder_and_decoder_on_the_slice_embedding(
    sam: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 32 px slice on the 64 px model: the boxes are scaled to the input, two classes decoded
    # together with one mask each, assembled by predicted IoU, upsampled back to 32 px.
    pixels, label = scene(32)
    image = (pixels / 255.0).astype(np.float32)[None, None]
    boxes = torch.tensor([[20.0, 12.0, 49.0, 39.0], [4.0, 44.0, 21.0, 59.0]])  # by hand, x 2
    decoder_calls: list[bool] = []
    decoder_forward = sam.mask_decoder.forward

    def record(*args: Any, **kwargs: Any) -> Any:
        decoder_calls.append(kwargs["multimask_output"])
        return decoder_forward(*args, **kwargs)

    monkeypatch.setattr(sam.mask_decoder, "forward", record)
    ours = zero_shot_volume(sam, image, label[None], 2, 1, prompt="box")
    assert decoder_calls == [False]  # one call, single-mask output

    with torch.no_grad():
        x = to_sam_input(torch.from_numpy(image[:, 0][None]), 64)
        embedding = sam.image_encoder(sam.preprocess(x * 255.0))
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        low_res, iou = decoder_forward(
            image_embeddings=embedding,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = sam.postprocess_masks(low_res, (64, 64), (32, 32))[:, 0]
    masks = (logits > sam.mask_threshold).numpy()
    assert masks.shape == (2, 32, 32) and all(0 < m.sum() < m.size for m in masks)
    expected = assemble(masks, iou[:, 0].numpy(), np.array([1, 2]))
    assert {1, 2} <= set(np.unique(expected))
    assert np.array_equal(ours[0], expected)


def test_both_prompt_kinds_share_one_encoder_pass_per_slice(
    sam: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels, label = scene(64)
    labels = np.stack([label, np.zeros_like(label), label])
    image = np.stack([pixels] * 3).astype(np.float32)[None] / 255.0
    alone = {p: zero_shot_volume(sam, image, labels, 2, 2, prompt=p) for p in ("point", "box")}
    encoded: list[int] = []
    encoder_forward = sam.image_encoder.forward

    def count(x: torch.Tensor) -> torch.Tensor:
        encoded.append(x.shape[0])
        return encoder_forward(x)

    monkeypatch.setattr(sam.image_encoder, "forward", count)
    both = zero_shot_volumes(sam, image, labels, 2, 2, ("point", "box"))
    assert encoded == [2]  # the two labeled slices, once, for both prompt kinds
    assert list(both) == ["point", "box"]
    for prompt, out in both.items():
        assert np.array_equal(out, alone[prompt]) and out[0].any() and not out[1].any()
    assert not np.array_equal(both["point"], both["box"])  # two different baselines
    assert zero_shot_volumes(sam, image, labels, 2, 2, ()) == {}


# --- params ------------------------------------------------------------------------------------


def test_zero_shot_prompts_params(params_dict: dict[str, Any]) -> None:
    params_dict = json.loads(json.dumps(params_dict))  # a copy: the fixture is shared
    assert parse_params(params_dict).evaluate.zero_shot_prompts == ("point", "box")  # default
    for value in ([], ["box"], ["box", "point"]):
        params_dict["evaluate"]["zero_shot_prompts"] = value
        assert parse_params(params_dict).evaluate.zero_shot_prompts == tuple(value)
    params_dict["evaluate"]["zero_shot_prompts"] = ["point", "box", "point"]
    with pytest.raises(ParamsError, match=r"evaluate\.zero_shot_prompts: must not list a prompt"):
        parse_params(params_dict)
    params_dict["evaluate"]["zero_shot_prompts"] = ["point", "mask"]
    with pytest.raises(ParamsError, match=r"evaluate\.zero_shot_prompts\[1\]: must be one of"):
        parse_params(params_dict)
    params_dict["evaluate"]["zero_shot_prompts"] = True
    with pytest.raises(ParamsError, match=r"evaluate\.zero_shot_prompts: must be a list"):
        parse_params(params_dict)
    del params_dict["evaluate"]["zero_shot_prompts"]
    params_dict["evaluate"]["zero_shot"] = True  # the boolean it replaces
    with pytest.raises(ParamsError, match=r"evaluate\.zero_shot: unknown key"):
        parse_params(params_dict)


# --- the stages: which files and keys ----------------------------------------------------------


@pytest.mark.parametrize("prompts", [[], ["box"]])
def test_infer_and_score_write_the_zero_shot_methods_asked_for(
    tmp_path: Path, params_dict: dict[str, Any], prompts: list[str]
) -> None:
    write_dataset(tmp_path / "data")
    data = stage_params(params_dict, tmp_path / "data", zero_shot_prompts=prompts)
    data["evaluate"]["max_cases"] = 1
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    write_adapter(tmp_path / "adapter", parse_params(data), ["liver", "spleen"], ["CT"])
    out = tmp_path / "reports"
    (out / "predictions" / "zero_shot").mkdir(parents=True)  # of an earlier run
    runner = CliRunner()
    for args in (
        ["evaluate", "infer", "-p", params_file, "--adapter", tmp_path / "adapter", "--out", out],
        ["evaluate", "score", "-p", params_file, "--pred", out / "predictions", "--out", out],
    ):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    methods = ["prompt_free", "prompted"] + (["zero_shot_box"] if prompts else [])
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(methods)
    metrics = json.loads((out / "metrics.json").read_text())
    zero_shot_keys = {k for k in metrics if k.startswith("zero_shot")}
    if prompts:
        assert zero_shot_keys == {"zero_shot_box", "zero_shot_box_dsc", "zero_shot_box_hd95"}
        assert list(metrics)[4:6] == ["zero_shot_box_dsc", "zero_shot_box_hd95"]
        assert 0.0 <= metrics["zero_shot_box_dsc"] <= 1.0
    else:
        assert zero_shot_keys == set()
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert sorted({r["method"] for r in rows}) == sorted(methods)
    per_class = list(csv.DictReader((out / "per_class.csv").open()))
    assert sorted({r["method"] for r in per_class}) == sorted(methods)


# --- reports -----------------------------------------------------------------------------------


def _summary(dice: float, hd95: float) -> Summary:
    counts = {"both": 1, "gt_only": 0, "pred_only": 0, "both_empty": 0}
    return Summary(dice, hd95, [dice], [hd95], counts)


def test_metrics_json_has_box_headline_keys_and_block(tmp_path: Path) -> None:
    summaries = {
        "prompted": _summary(0.75, 2.0),
        "zero_shot": _summary(0.25, 8.0),
        "zero_shot_box": _summary(0.5, 6.0),
    }
    metrics = reports.metrics_dict("transunet", ["liver"], 1, summaries)
    assert (metrics["zero_shot_box_dsc"], metrics["zero_shot_box_hd95"]) == (0.5, 6.0)
    assert metrics["zero_shot_box"]["per_class"]["liver"] == {"dice": 0.5, "hd95": 6.0}
    assert "methods" not in metrics  # a pipeline method, not another tool's
    reports.write_metrics(tmp_path / "metrics.json", metrics)
    assert list(json.loads((tmp_path / "metrics.json").read_text()))[:6] == [
        "dsc",
        "hd95",
        "zero_shot_dsc",
        "zero_shot_hd95",
        "zero_shot_box_dsc",
        "zero_shot_box_hd95",
    ]
    assert reports.METHOD_TITLES["zero_shot_box"] == "zero-shot SAM (box)"


def _record(name: str, time: str, metrics: dict[str, Any]) -> ExpRecord:
    params = {"exemplars": 9, "dataset": {"format": "synapse"}, "synth": {"enabled": True}}
    metrics = {"dsc": 0.8, "hd95": 10.0, "dsc_prompt_free": 0.7, "hd95_unit": "voxel", **metrics}
    return ExpRecord(name, f"{name}-rev", "base", "success", time, params, metrics)


def test_report_has_a_box_row_after_the_point_row() -> None:
    records = [
        _record("a-9-synth", "2025-01-01T10:00:00", {"zero_shot_dsc": 0.4, "zero_shot_hd95": 9.0}),
        _record(
            "b-9-synth",
            "2025-01-01T09:00:00",
            {"zero_shot_box": {"dice": 0.6, "hd95": 5.0}},  # nested only: the fallback
        ),
    ]
    rows = table_rows(records)
    assert [(r.method, r.point) for r in rows[:2]] == [
        (ZERO_SHOT, "a-9-synth"),
        (ZERO_SHOT_BOX, "b-9-synth"),  # the newest experiment that scored box prompts
    ]
    lines = markdown(rows).splitlines()
    assert lines[2] == "| Synapse | zero-shot SAM | – | 40.00 | 9.00 | – | – | – | – | a-9-synth |"
    assert (
        lines[3]
        == "| Synapse | zero-shot SAM (box) | – | 60.00 | 5.00 | – | – | – | – | b-9-synth |"
    )
    # Experiments from before box prompts: no box row.
    assert ZERO_SHOT_BOX not in {r.method for r in table_rows(records[:1])}
