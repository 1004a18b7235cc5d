"""The synthetic set as training batches: reading, resizing, prompt sampling, step-wise order.

Every random choice comes from a generator seeded with the master seed and what it is about,
never from worker ids or global state, so the batches are the same whatever `train.num_workers`
is, however many processes share the work, and after resuming at any step:

- order: the sample stream is a concatenation of permutations, epoch e shuffled by
  rng([seed, streams.TRAIN, streams.TRAIN_SHUFFLE, e]); step s of rank r (of R) takes stream positions
  [(s R + r) B, (s R + r + 1) B), so a run can start at any step without replaying earlier ones;
- prompts: the points of sample i in epoch e come from rng([seed, streams.TRAIN, streams.TRAIN_PROMPTS, e, i]);
- prompt dropout: step s is prompt-free when rng([seed, streams.TRAIN, streams.TRAIN_DROPOUT, s]) draws below
  `train.prompt_dropout` (the same answer on every rank).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from core import streams
from core.errors import InputError
from core.schema import SyntheticInfo, read_synthetic_info
from train.inputs import resize_label, to_sam_input
from train.prompts import pad_points, sample_class_points

SampleKey = tuple[int, int]  # (epoch, index into synthetic.h5)


class TrainSample(NamedTuple):
    """One training example at the model's input size S."""

    image: torch.Tensor  # 3 x S x S float32 in [0, 1]
    label: torch.Tensor  # S x S int64 class ids 0..K
    points: np.ndarray  # P x 2 float32, (x, y) pixel coordinates in the S x S input
    classes: np.ndarray  # P int64 class id of each point, 1..K


class Batch(NamedTuple):
    """A collated batch; `point_labels` is -1 where a row is padding."""

    images: torch.Tensor  # B x 3 x S x S float32
    labels: torch.Tensor  # B x S x S int64
    points: torch.Tensor  # B x Pmax x 2 float32 (x, y)
    point_labels: torch.Tensor  # B x Pmax int64, 1..K or -1

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in self))


class SyntheticSlices(Dataset[TrainSample]):
    """`data/synthetic.h5` indexed by (epoch, index) keys; one lazily opened file per process.

    The HDF5 handle is opened on first use inside whichever process reads (the main one, or each
    DataLoader worker), and never pickled: h5py handles must not cross a fork.
    """

    def __init__(self, path: Path, input_size: int, points_per_class: int, seed: int) -> None:
        self.info: SyntheticInfo = read_synthetic_info(path)
        if self.info.length == 0:
            raise InputError(path, "the synthetic set is empty")
        self.input_size = input_size
        self.points_per_class = points_per_class
        self.seed = seed
        self._file: h5py.File | None = None
        self._pid = -1

    @property
    def num_classes(self) -> int:
        return len(self.info.classes)

    def __len__(self) -> int:
        return self.info.length

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.info.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, -1
        return state

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getitem__(self, key: SampleKey) -> TrainSample:
        epoch, index = key
        f = self._handle()
        image = f["image"][index].astype(np.float32)  # C x H x W
        label = f["label"][index]  # H x W uint8
        if int(label.max()) > self.num_classes:
            raise InputError(self.info.path, f"sample {index} has label ids above the classes")
        x = to_sam_input(image[None], self.input_size)[0]
        y = resize_label(torch.from_numpy(label[None]), self.input_size)[0]
        rng = np.random.default_rng([self.seed, streams.TRAIN, streams.TRAIN_PROMPTS, epoch, index])
        points, classes = sample_class_points(
            y.numpy(), self.num_classes, self.points_per_class, rng
        )
        return TrainSample(x, y.long(), points, classes)


def collate(samples: list[TrainSample]) -> Batch:
    """Stack images and labels; pad the per-image point lists to the longest one."""
    points, point_labels = pad_points([(s.points, s.classes) for s in samples])
    return Batch(
        images=torch.stack([s.image for s in samples]),
        labels=torch.stack([s.label for s in samples]),
        points=points,
        point_labels=point_labels,
    )


class StepBatchSampler(Sampler[list[SampleKey]]):
    """Batches of (epoch, index) keys for steps start_step..max_steps-1 of one rank."""

    def __init__(
        self,
        length: int,
        batch_size: int,
        seed: int,
        start_step: int,
        max_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        assert 0 <= rank < world_size and 0 <= start_step <= max_steps
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start_step, self.max_steps = start_step, max_steps
        self.rank, self.world_size = rank, world_size
        self._epoch, self._permutation = -1, np.arange(0)

    def _order(self, epoch: int) -> np.ndarray:
        # Positions only increase, so remembering the last epoch's permutation is enough.
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, streams.TRAIN, streams.TRAIN_SHUFFLE, epoch])
            self._epoch, self._permutation = epoch, rng.permutation(self.length)
        return self._permutation

    def batch(self, step: int) -> list[SampleKey]:
        """The keys rank `rank` trains on at `step`."""
        first = (step * self.world_size + self.rank) * self.batch_size
        keys = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.length)
            keys.append((epoch, int(self._order(epoch)[offset])))
        return keys

    def __len__(self) -> int:
        return self.max_steps - self.start_step

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for step in range(self.start_step, self.max_steps):
            yield self.batch(step)


def prompt_free(seed: int, step: int, prompt_dropout: float) -> bool:
    """Whether step `step` trains without prompts (same on every rank and after resuming)."""
    return bool(
        np.random.default_rng([seed, streams.TRAIN, streams.TRAIN_DROPOUT, step]).random()
        < prompt_dropout
    )


def make_loader(
    dataset: SyntheticSlices, sampler: StepBatchSampler, num_workers: int, pin_memory: bool
) -> DataLoader[TrainSample]:
    """A DataLoader yielding `Batch`es in the sampler's order (workers only change the speed)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
