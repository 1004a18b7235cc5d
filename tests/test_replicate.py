"""Replicates: `replicate` changes what the method draws (exemplar choice, pool, synthesis), never
the data, the train/test split or the evaluation prompts, which follow the master `seed`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import replace_section
from dataset_files import make_brats, make_synapse
from exemplar_sets import exemplar_set

from core import streams
from core.errors import ParamsError
from core.params import Params, parse_params
from core.volume import Volume
from evaluate import infer
from synth import exemplars
from synth.datasets import open_dataset
from synth.synthesize import make_sample


def test_stream_seed_of_replicate_zero_is_the_master_seed() -> None:
    for seed in (0, 1, 7, 2**31 + 5):
        assert streams.stream_seed(seed, 0) == seed


def test_stream_seeds_of_replicates_differ_and_are_deterministic() -> None:
    seeds = [streams.stream_seed(0, r) for r in range(20)]
    assert len(set(seeds)) == 20  # replicate 0 (the master seed) included
    assert seeds == [streams.stream_seed(0, r) for r in range(20)]
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    # The replicate's seed depends on the master seed too: replicate 1 of seed 0 and of seed 1
    # differ, and replicate r of one master seed is not the master seed of another run.
    assert streams.stream_seed(0, 1) != streams.stream_seed(1, 1)
    assert streams.stream_seed(0, 1) not in (0, 1)


def test_stream_seed_of_a_replicate_is_spawned_from_seed_and_the_replicate_key() -> None:
    # Independent of the implementation's arithmetic: the first 32-bit word NumPy's SeedSequence
    # derives from the entropy [seed, REPLICATE, r].
    expected = np.random.SeedSequence([3, streams.REPLICATE, 2]).generate_state(1, np.uint32)[0]
    assert streams.stream_seed(3, 2) == int(expected)


def test_params_replicate_defaults_to_zero_and_must_not_be_negative(
    params_dict: dict[str, Any],
) -> None:
    p = parse_params(params_dict)
    assert p.replicate == 0 and p.stream_seed == p.seed
    data = {**params_dict, "seed": 5, "replicate": 2}
    q = parse_params(data)
    assert q.seed == 5 and q.stream_seed == streams.stream_seed(5, 2) != 5
    with pytest.raises(ParamsError, match="replicate"):
        parse_params({**params_dict, "replicate": -1})


def _replicate(params: Params, r: int, seed: int | None = None) -> Params:
    return dataclasses.replace(params, replicate=r, seed=params.seed if seed is None else seed)


def test_replicate_changes_the_synthetic_samples(params: Params) -> None:
    ex = exemplar_set(n=6, pool=2, size=48)
    synth = dataclasses.replace(params.synth, enabled=True)
    zero, one = _replicate(params, 0), _replicate(params, 1)
    assert zero.stream_seed == params.seed
    a = [make_sample(ex, synth, zero.stream_seed, i) for i in range(4)]
    b = [make_sample(ex, synth, one.stream_seed, i) for i in range(4)]
    again = [make_sample(ex, synth, one.stream_seed, i) for i in range(4)]
    for x, y in zip(b, again, strict=True):  # a replicate is reproducible
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.label, y.label)
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))


def _exemplar_params(params: Params, root: Path, fmt: str, r: int, seed: int = 0) -> Params:
    p = replace_section(params, "dataset", format=fmt, root=str(root), slice_size=0)
    p = replace_section(p, "synth", exemplar_strategy="random", pool_per_case=2)
    return dataclasses.replace(_replicate(p, r, seed), exemplars=4)


def test_replicate_changes_the_exemplar_choice_and_pool_but_the_split_follows_seed(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_synapse(tmp_path / "ds")
    seen: list[int] = []

    def spy(p: Any, seed: int, root: Path | None = None) -> Any:
        seen.append(seed)
        return open_dataset(p, seed, root)

    monkeypatch.setattr(exemplars, "open_dataset", spy)
    picks = []
    for r in range(4):
        p = _exemplar_params(params, root, "synapse", r, seed=3)
        ex = exemplars.run(p, tmp_path / f"ex{r}.h5", tmp_path / f"ex{r}.csv")
        picks.append(
            (
                tuple(zip(ex.case, ex.slice.tolist(), strict=True)),
                tuple(zip(ex.pool_case, ex.pool_slice.tolist(), strict=True)),
            )
        )
    assert seen == [3, 3, 3, 3]  # the reader (and its split) get the master seed
    assert len({choice for choice, _ in picks}) > 1  # other exemplars...
    assert len({pool for _, pool in picks}) > 1  # ...and other background slices
    # Replicate 0 draws what the master seed alone always drew.
    p = _exemplar_params(params, root, "synapse", 0, seed=3)
    rng = np.random.default_rng([3, streams.EXEMPLARS])
    labeled = [list(range(1, 5))] * 3  # the fixture: slices 1..4 labeled in cases 5, 6, 7
    expected = exemplars.select_exemplars(labeled, p.exemplars, "random", rng)
    cases = ("case0005", "case0006", "case0007")
    assert picks[0][0] == tuple((cases[v], z) for v, z in expected)


def test_replicates_share_the_seeded_brats_split(params: Params, tmp_path: Path) -> None:
    root = make_brats(tmp_path / "ds", hgg=4, lgg=2)
    base = replace_section(params, "dataset", format="brats", root=str(root))
    split = {seed: set(open_dataset(base.dataset, seed).cases("train")) for seed in range(6)}
    assert len({frozenset(s) for s in split.values()}) > 1  # the split does follow the seed
    for seed in (0, 1):
        for r in (0, 1, 2):
            p = _exemplar_params(params, root, "brats", r, seed)
            p = dataclasses.replace(p, exemplars=2)
            ex = exemplars.run(p, tmp_path / "ex.h5", tmp_path / "ex.csv")
            # Every training case gives pool slices: the pool's cases are the training split.
            assert set(ex.pool_case) == split[seed], (seed, r)
            assert set(ex.case) <= split[seed]


class _Adapted:
    num_classes = 3


def _prompts_of(params: Params, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The evaluation prompts of every slice of a small labeled case, as infer draws them."""
    got: list[Any] = []

    def predict_volumes(model: Any, image: np.ndarray, batch: int, prompt_sets: Any, **kw: Any):
        for prompts in prompt_sets:
            if prompts is not None:
                got.extend(prompts(z) for z in range(image.shape[1]))
        return [np.zeros((image.shape[1], *kw["out_hw"]), np.uint8) for _ in prompt_sets]

    monkeypatch.setattr(infer, "predict_volumes", predict_volumes)
    label = np.zeros((3, 24, 24), np.uint8)
    label[:, 4:14, 4:14] = 1
    label[1:, 15:22, 10:20] = 2
    label[2, 2:8, 16:22] = 3
    source = Volume(
        "case0001",
        np.zeros((1, 3, 24, 24), np.float32),
        label,
        np.eye(4),
        (1.0, 1.0, 1.0),
        Path("case0001.nii.gz"),
    )
    p = replace_section(params, "dataset", slice_size=0)
    preds = infer.predict_case(infer.Models(_Adapted(), None), source, p)  # type: ignore[arg-type]
    assert set(preds) == {"prompt_free", "prompted"}
    assert len(got) == 3
    return got


def _same(a: list[Any], b: list[Any]) -> bool:
    return all(
        np.array_equal(pa, pb) and np.array_equal(ca, cb)
        for (pa, ca), (pb, cb) in zip(a, b, strict=True)
    )


def test_evaluation_prompts_follow_the_seed_not_the_replicate(
    params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    zero = _prompts_of(_replicate(params, 0, seed=0), monkeypatch)
    one = _prompts_of(_replicate(params, 1, seed=0), monkeypatch)
    five = _prompts_of(_replicate(params, 5, seed=0), monkeypatch)
    assert _same(zero, one) and _same(zero, five)
    assert not _same(zero, _prompts_of(_replicate(params, 0, seed=1), monkeypatch))
