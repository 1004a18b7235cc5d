"""Training inputs: resizing (against OpenCV), the dataset, the step sampler, prompt dropout."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from synthetic_sets import write_synthetic

from core.errors import InputError
from train.data import StepBatchSampler, SyntheticSlices, make_loader, prompt_free
from train.inputs import resize_label, to_sam_input


def test_channels_to_three() -> None:
    gray = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    out = to_sam_input(gray, 8)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    assert all(torch.equal(out[:, c], torch.from_numpy(gray[:, 0])) for c in range(3))
    rgb = torch.rand(1, 3, 8, 8)
    assert torch.equal(to_sam_input(rgb, 8), rgb)
    with pytest.raises(ValueError, match="2 channels"):
        to_sam_input(torch.rand(1, 2, 8, 8), 8)
    with pytest.raises(ValueError, match="N x C x H x W"):
        to_sam_input(torch.rand(3, 8, 8), 8)


def test_upsampling_matches_opencv_bilinear() -> None:
    image = np.random.default_rng(1).random((12, 12), dtype=np.float32)
    ours = to_sam_input(image[None, None], 36)[0, 0].numpy()
    theirs = cv2.resize(image, (36, 36), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("size", [16, 13])
def test_downsampling_matches_pillow_antialiased_bilinear(size: int) -> None:
    # Pillow low-passes when shrinking; plain bilinear would alias fine patterns instead.
    image = np.random.default_rng(4).random((40, 40), dtype=np.float32)
    ours = to_sam_input(image[None, None], size)[0, 0].numpy()
    theirs = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BILINEAR))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours.min() >= 0.0 and ours.max() <= 1.0


@pytest.mark.parametrize("size", [5, 24, 7])
def test_label_resize_matches_opencv_nearest_exact(size: int) -> None:
    label = np.random.default_rng(2).integers(0, 9, (12, 12), dtype=np.uint8)
    ours = resize_label(label[None], size)[0].numpy()
    theirs = cv2.resize(label, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, theirs)


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    image = rng.random((10, 1, 32, 32))
    label = np.zeros((10, 32, 32), np.uint8)
    label[:, 4:12, 4:12] = 1
    label[::2, 20:30, 18:28] = 2  # class 2 only in even samples
    return write_synthetic(tmp_path / "s.h5", image, label, classes=("a", "b"))


def test_dataset_item(synthetic: Path) -> None:
    ds = SyntheticSlices(synthetic, input_size=64, points_per_class=3, seed=0)
    assert len(ds) == 10 and ds.num_classes == 2
    sample = ds[(0, 4)]
    assert sample.image.shape == (3, 64, 64) and sample.label.shape == (64, 64)
    assert sample.label.dtype == torch.int64
    assert sample.classes.tolist() == [1, 1, 1, 2, 2, 2]
    # Points are pixel centres (x, y) inside their class at the 64 px input size.
    cols, rows = np.floor(sample.points).astype(int).T
    assert sample.label[rows, cols].tolist() == sample.classes.tolist()
    assert ds[(1, 5)].classes.tolist() == [1, 1, 1]
    # Same key, same points; another epoch, other points.
    np.testing.assert_array_equal(ds[(0, 4)].points, sample.points)
    assert not np.array_equal(ds[(1, 4)].points, sample.points)
    ds.close()


def test_sampler_resumes_and_splits_ranks() -> None:
    full = list(StepBatchSampler(10, 3, seed=0, start_step=0, max_steps=12))
    assert len(full) == 12
    assert list(StepBatchSampler(10, 3, seed=0, start_step=5, max_steps=12)) == full[5:]
    # Every epoch visits each sample exactly once (36 positions = 3 epochs and 6 samples).
    keys = [k for batch in full for k in batch]
    for epoch in range(3):
        assert sorted(i for e, i in keys if e == epoch) == list(range(10))
    # Two ranks of batch 3 take the same stream as one rank of batch 6, split in halves.
    ranks = [list(StepBatchSampler(10, 3, 0, 0, 6, rank=r, world_size=2)) for r in (0, 1)]
    single = list(StepBatchSampler(10, 6, 0, 0, 6))
    assert [a + b for a, b in zip(*ranks, strict=True)] == single


def test_workers_give_the_same_batches(synthetic: Path) -> None:
    def batches(workers: int) -> list[torch.Tensor]:
        ds = SyntheticSlices(synthetic, input_size=48, points_per_class=2, seed=5)
        loader = make_loader(ds, StepBatchSampler(len(ds), 4, 5, 0, 4), workers, False)
        return [
            torch.cat([b.images.flatten(), b.points.flatten(), b.point_labels.flatten()])
            for b in loader
        ]

    zero, two = batches(0), batches(2)
    assert len(zero) == 4 and all(torch.equal(a, b) for a, b in zip(zero, two, strict=True))


def test_prompt_dropout() -> None:
    draws = [prompt_free(7, step, 0.3) for step in range(2000)]
    assert draws == [prompt_free(7, step, 0.3) for step in range(2000)]
    assert 0.26 < np.mean(draws) < 0.34
    assert not any(prompt_free(7, s, 0.0) for s in range(100))
    assert all(prompt_free(7, s, 1.0) for s in range(100))


def test_wrong_or_damaged_file(tmp_path: Path, synthetic: Path) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["kind"] = "something-else"
    with pytest.raises(InputError, match="not a fewsam-synthetic"):
        SyntheticSlices(other, 64, 1, 0)
    with h5py.File(synthetic, "a") as f:
        f["label"][0, 0, 0] = 9
    with pytest.raises(InputError, match="above the classes"):
        SyntheticSlices(synthetic, 32, 1, 0)[(0, 0)]
