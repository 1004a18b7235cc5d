"""Zero-shot SAM: the interior point, assembly by predicted IoU, one encoder pass per slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from evaluate.zero_shot import assemble, interior_point, interior_points, zero_shot_volume
from train.base_weights import load_sam

PRETRAINED = Path(__file__).resolve().parents[1] / "models" / "base" / "tiny_sam.safetensors"


def test_interior_point_is_the_centre_of_the_thickest_part() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[1:4, 1:4] = True  # 3 x 3: centre 2 px from outside
    mask[8:15, 6:13] = True  # 7 x 7: centre (11, 9), 4 px from outside
    assert interior_point(mask) == (11, 9)


def test_interior_point_treats_the_image_edge_as_outside() -> None:
    # A 5 x 5 square in the corner: its centre (2, 2) is 3 px from outside on every side. Without
    # the edge counting as outside, the corner pixel (0, 0) would look deepest.
    mask = np.zeros((12, 12), dtype=bool)
    mask[:5, :5] = True
    assert interior_point(mask) == (2, 2)


def test_interior_points_use_pixel_centres_in_xy() -> None:
    label = np.zeros((20, 20), np.uint8)
    label[8:15, 6:13] = 2
    points, classes = interior_points(label, num_classes=3)
    assert classes.tolist() == [2]
    assert points.tolist() == [[9.5, 11.5]]  # (x, y) = (col + 0.5, row + 0.5)
    empty_points, empty_classes = interior_points(np.zeros((4, 4), np.uint8), 3)
    assert empty_points.shape == (0, 2) and empty_classes.shape == (0,)


def test_assemble_resolves_overlaps_by_predicted_iou() -> None:
    masks = np.zeros((2, 4, 6), dtype=bool)
    masks[0, :, :4] = True  # class 3, IoU 0.6
    masks[1, :, 2:] = True  # class 1, IoU 0.9: wins the overlap (columns 2-3)
    out = assemble(masks, np.array([0.6, 0.9]), np.array([3, 1]))
    assert out[0].tolist() == [3, 3, 1, 1, 1, 1]
    assert out.dtype == np.uint8
    masks[1] = False
    assert assemble(masks, np.array([0.6, 0.9]), np.array([3, 1]))[0].tolist() == [3] * 4 + [0] * 2


@pytest.fixture(scope="module")
def tiny_sam() -> torch.nn.Module:
    return load_sam("tiny", None, 64)


def test_embedding_computed_once_per_labeled_slice(
    tiny_sam: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    sam = tiny_sam
    label = np.zeros((8, 64, 64), np.uint8)
    label[[1, 2, 4, 5, 6], 10:30, 10:30] = 1
    label[[2, 5], 40:60, 35:55] = 2
    image = np.random.default_rng(0).random((1, 8, 64, 64)).astype(np.float32)

    encoded: list[int] = []
    prompts: list[torch.Tensor] = []
    encoder_forward, prompt_forward = sam.image_encoder.forward, sam.prompt_encoder.forward

    def count_encoder(x: torch.Tensor) -> torch.Tensor:
        encoded.append(x.shape[0])
        return encoder_forward(x)

    def record_prompts(points, boxes, masks):  # type: ignore[no-untyped-def]
        prompts.append(points[0].clone())
        return prompt_forward(points, boxes, masks)

    monkeypatch.setattr(sam.image_encoder, "forward", count_encoder)
    monkeypatch.setattr(sam.prompt_encoder, "forward", record_prompts)
    out = zero_shot_volume(sam, image, label, num_classes=2, batch_size=2)

    assert out.shape == (8, 64, 64) and out.dtype == np.uint8
    assert not out[[0, 3, 7]].any()  # unlabeled slices are not prompted
    assert encoded == [2, 2, 1]  # the 5 labeled slices, batched by 2, each encoded once
    assert [len(p) for p in prompts] == [1, 2, 1, 2, 1]  # all classes of a slice in one call
    # SAM's prompt encoder adds 0.5 itself: it receives the integer pixel (col, row) of the
    # interior point. Class 1 fills rows/cols 10..29, whose interior point is (19, 19).
    assert prompts[0].tolist() == [[[19.0, 19.0]]]


def test_output_keeps_non_square_slice_geometry(tiny_sam: torch.nn.Module) -> None:
    label = np.zeros((3, 40, 56), np.uint8)
    label[1, 5:30, 10:40] = 1
    image = np.random.default_rng(1).random((3, 3, 40, 56)).astype(np.float32)
    out = zero_shot_volume(tiny_sam, image, label, num_classes=1, batch_size=4)
    assert out.shape == (3, 40, 56)
    assert set(np.unique(out)) <= {0, 1}


def test_matches_segment_anythings_own_predictor() -> None:
    # SamPredictor is SAM's reference path (its own resizing, normalization, point transform and
    # postprocessing); one class, one point: the same mask must come out. The pretrained tiny SAM
    # (in the repository) on a bright box beside another object gives a real segmentation, so the
    # masks compared are neither empty nor the whole slice, and the three candidates differ, so
    # picking the one of highest predicted IoU matters.
    from segment_anything import SamPredictor

    sam = load_sam("tiny", PRETRAINED, 64)
    rng = np.random.default_rng(3)
    scene = np.full((64, 64), 40.0)
    scene[12:40, 20:50] = 200.0  # the prompted organ
    scene[46:60, 4:18] = 120.0  # another structure
    pixels = np.clip(scene + rng.normal(0.0, 8.0, scene.shape), 0, 255).astype(np.uint8)
    label = np.zeros((1, 64, 64), np.uint8)
    label[0, 12:40, 20:50] = 1
    ours = zero_shot_volume(sam, (pixels / 255.0).astype(np.float32)[None, None], label, 1, 1)

    predictor = SamPredictor(sam)
    predictor.set_image(np.repeat(pixels[..., None], 3, axis=2))
    row, col = interior_point(label[0] == 1)
    masks, iou, _ = predictor.predict(
        point_coords=np.array([[col, row]], np.float32),
        point_labels=np.array([1]),
        multimask_output=True,
    )
    best = masks[int(np.argmax(iou))]
    assert 0 < best.sum() < best.size and best[row, col]
    assert (best & (label[0] == 1)).sum() > (best & (label[0] == 0)).sum()  # on the organ
    assert any(not np.array_equal(best, m) for m in masks)
    assert np.array_equal(ours[0] == 1, best)
    assert set(np.unique(ours)) == {0, 1}
