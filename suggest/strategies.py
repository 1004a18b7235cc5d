"""How slices are chosen: pure functions of per-slice facts, seeded where they draw.

Candidates are given per scan as axial indices (Z of `core.volume`); slices already listed are
never chosen again. Every function returns (scan index, axial index) pairs, sorted.

- `spread`: evenly over the scans and, inside each, evenly over its free body slices: the
  exemplar spread of `synth.exemplars`, on body slices instead of labeled ones.
- `random`: a seeded draw without replacement from the free body slices.
- `k_center`: greedy farthest-point selection on feature vectors (k-center), starting from the
  already listed slices, or, when there are none, from the most typical candidate (the one
  nearest the mean feature, so that one slice alone is a representative one, not an outlier);
  each further pick is the candidate farthest from everything picked or listed, so picks cover
  the feature space.
- `most_uncertain_then_diverse`: the `pool` x n candidates of highest uncertainty, then
  `k_center` among them, so n picks are not n neighbours of one confusing region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synth.exemplars import select_exemplars

Pick = tuple[int, int]  # (scan index, axial index)


def free_candidates(
    candidates: Sequence[np.ndarray], listed: Sequence[set[int]]
) -> list[np.ndarray]:
    """Per scan, its candidate axial indices that are not listed yet (sorted)."""
    return [
        np.asarray(sorted(int(z) for z in c if int(z) not in done), np.int64)
        for c, done in zip(candidates, listed, strict=True)
    ]


def _check_enough(n: int, available: int) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > available:
        raise ValueError(f"{n} slices asked for but only {available} candidates are free")


def spread(candidates: Sequence[np.ndarray], n: int, listed: Sequence[set[int]]) -> list[Pick]:
    """`n` slices evenly over the scans and over each scan's free candidates."""
    free = free_candidates(candidates, listed)
    _check_enough(n, sum(len(f) for f in free))
    # The exemplar spread of the paper's protocol, over body slices instead of labeled ones.
    unused = np.random.default_rng(0)  # `spread` draws nothing
    return select_exemplars([list(f) for f in free], n, "spread", unused)


def random_picks(
    candidates: Sequence[np.ndarray], n: int, listed: Sequence[set[int]], rng: np.random.Generator
) -> list[Pick]:
    """`n` slices drawn uniformly without replacement from the free candidates."""
    flat = [(v, int(z)) for v, f in enumerate(free_candidates(candidates, listed)) for z in f]
    _check_enough(n, len(flat))
    return sorted(flat[i] for i in rng.choice(len(flat), size=n, replace=False))


def k_center(
    features: np.ndarray, n: int, centers: np.ndarray | None
) -> tuple[list[int], np.ndarray]:
    """Greedy k-center: indices of `n` rows of `features` (N x D) and each one's distance.

    centers: M x D features of slices already listed (M may be 0). The distance returned for a
    pick is its distance to the nearest earlier pick or listed slice when it was chosen (the first
    pick without centers gets NaN: it was chosen as the most typical, not by that distance).
    """
    _check_enough(n, len(features))
    x = np.asarray(features, np.float64)
    nearest = np.full(len(x), np.inf)
    if centers is not None and len(centers):
        c = np.asarray(centers, np.float64)
        nearest = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)).min(axis=1)
    picks: list[int] = []
    scores: list[float] = []
    for _ in range(n):
        if np.isinf(nearest).all():
            typical = np.sqrt(((x - x.mean(axis=0)) ** 2).sum(-1))
            i, score = int(np.argmin(typical)), float("nan")  # ties: the lowest index
        else:
            masked = np.where(np.isin(np.arange(len(x)), picks), -1.0, nearest)
            i = int(np.argmax(masked))  # ties: the lowest index, so the result is reproducible
            score = float(nearest[i])
        picks.append(i)
        scores.append(score)
        nearest = np.minimum(nearest, np.sqrt(((x - x[i]) ** 2).sum(-1)))
    return picks, np.asarray(scores)


def most_uncertain_then_diverse(
    uncertainty: np.ndarray,
    features: np.ndarray,
    n: int,
    pool: int,
    centers: np.ndarray | None,
) -> list[int]:
    """Indices of `n` candidates: k-center among the `pool * n` most uncertain ones."""
    _check_enough(n, len(uncertainty))
    # Stable sort on the negated score: equal uncertainty keeps candidate order.
    top = np.argsort(-np.asarray(uncertainty, np.float64), kind="stable")[: max(n, pool * n)]
    chosen, _ = k_center(np.asarray(features)[top], n, centers)
    return [int(top[i]) for i in chosen]
