"""`fewsam synth suggest`: pick the slices worth labeling and prepare their label files.

Reads the training scans of `params.dataset` (never a test scan, never a label), finds each
scan's body slices, chooses `n` slices with a strategy (`suggest.strategy`, see
`suggest.strategies`), and writes into the annotation folder (`synth.annotations`):

    slices.csv       the manifest, earlier rows kept, new rows appended (round r + 1)
    labels/<case>.nii.gz   on each scan's own grid; drafts on the new slices with --adapter
    suggested.png    the new slices, drafts overlaid

Same params, inputs and seed -> the same suggestions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core import streams
from core.atomic import ensure_parent
from core.device import pick_device
from core.errors import InputError, ParamsError
from core.params import Params
from core.progress import track
from core.volume import Volume
from evaluate.inference import predict_volume
from suggest import features, strategies
from suggest.files import Suggestion, contact_sheet, manifest_rows
from synth.annotations import (
    MANIFEST,
    SliceRow,
    canonical_z,
    check_folder,
    has_manifest,
    write_manifest,
)
from synth.check import refuse
from synth.datasets import open_dataset
from synth.datasets.base import resize_volume
from train.adapter_io import load_adapter
from train.base_weights import load_sam

SHEET = "suggested.png"


@dataclass(frozen=True)
class Scan:
    """One training scan as suggest sees it: its body slices, slices already listed and, for
    the feature strategies, each candidate's or listed slice's features and uncertainty."""

    case: str
    body: np.ndarray  # axial indices
    listed: set[int]  # axial indices
    candidates: list[int] = field(default_factory=list)  # body[::stride], not listed
    features: dict[int, np.ndarray] = field(default_factory=dict)  # axial index -> E vector
    uncertainty: dict[int, float] = field(default_factory=dict)  # axial index -> entropy


# (image C x Z x H x W at the model's slice size, axial indices) -> (features, uncertainties)
FactsFn = Callable[[np.ndarray, list[int]], tuple[np.ndarray, np.ndarray]]


def _facts_fn(
    params: Params, strategy: str, model: torch.nn.Module | None, device: torch.device
) -> FactsFn | None:
    """What the feature strategies look at: the base SAM's encoder features (diverse, even when
    an adapter gives the drafts) or the adapted model's uncertainty and features (uncertain)."""
    batch = params.evaluate.batch_size
    if strategy == "uncertain":
        assert model is not None

        def adapted(image: np.ndarray, zs: list[int]) -> tuple[np.ndarray, np.ndarray]:
            entropy, feats = features.adapted_uncertainty(model, image, zs, batch, device)
            return feats, entropy

        return adapted
    if strategy != "diverse":
        return None
    sam = load_sam(params.model.arch, params.model.checkpoint, params.model.input_size)
    sam = sam.to(device)

    def encode(x: torch.Tensor) -> torch.Tensor:
        return sam.image_encoder(sam.preprocess(x * 255.0))

    def base(image: np.ndarray, zs: list[int]) -> tuple[np.ndarray, np.ndarray]:
        size = params.model.input_size
        feats = features.pooled_features(encode, image, zs, size, batch, device)
        return feats, np.zeros(len(zs))

    return base


def _scans(
    params: Params,
    reader: object,
    cases: list[str],
    rows: list[SliceRow],
    facts: FactsFn | None,
) -> list[Scan]:
    """Every training scan read once: body slices, listed slices, and `facts` of the candidates
    (every `suggest.stride`-th free body slice) and of the listed slices."""
    listed_files: dict[str, set[int]] = {}
    for row in rows:
        listed_files.setdefault(row.case, set()).add(row.slice)
    out = []
    for case in track(cases, "scanning" if facts is None else "encoder"):
        volume = reader.load(case, resize=False)  # type: ignore[attr-defined]
        listed = {canonical_z(k, volume) for k in listed_files.get(case, set())}
        body = features.body_slices(volume.image, params.suggest.body_fraction)
        scan = Scan(case, body, listed)
        if facts is not None:
            stride = params.suggest.stride
            candidates = [int(z) for z in body[::stride] if int(z) not in listed]
            zs = candidates + sorted(listed)
            feats, unc = facts(_model_input(volume, params), zs) if zs else ([], [])
            scan = Scan(
                case,
                body,
                listed,
                candidates,
                dict(zip(zs, feats, strict=True)),
                {z: float(u) for z, u in zip(zs, unc, strict=True)},
            )
        out.append(scan)
        del volume
    return out


def _model_input(volume: Volume, params: Params) -> np.ndarray:
    return resize_volume(volume, params.dataset.slice_size).image


def _feature_picks(
    params: Params, scans: list[Scan], n: int, strategy: str
) -> list[tuple[int, int, float | None]]:
    """diverse / uncertain: (scan index, axial index, score) of the n picks."""
    candidates = [(v, z) for v, s in enumerate(scans) for z in s.candidates]
    listed = [(v, z) for v, s in enumerate(scans) for z in sorted(s.listed)]
    if n > len(candidates):
        raise ParamsError(f"suggest: {n} slices asked for, only {len(candidates)} candidates")
    x = np.stack([scans[v].features[z] for v, z in candidates])
    centers = np.stack([scans[v].features[z] for v, z in listed]) if listed else None
    if strategy == "diverse":
        chosen, distances = strategies.k_center(x, n, centers)
        return [(*candidates[i], float(d)) for i, d in zip(chosen, distances, strict=True)]
    u = np.array([scans[v].uncertainty[z] for v, z in candidates])
    chosen = strategies.most_uncertain_then_diverse(u, x, n, params.suggest.uncertain_pool, centers)
    return [(*candidates[i], float(u[i])) for i in chosen]


def choose(
    params: Params, scans: list[Scan], n: int, strategy: str, seed: int
) -> list[tuple[int, int, float | None]]:
    """(scan index, axial index, score) of the `n` slices to label, in rank order."""
    rng = np.random.default_rng([seed, streams.SUGGEST])
    bodies = [s.body for s in scans]
    listed = [s.listed for s in scans]
    try:
        if strategy == "spread":
            return [(v, z, None) for v, z in strategies.spread(bodies, n, listed)]
        if strategy == "random":
            return [(v, z, None) for v, z in strategies.random_picks(bodies, n, listed, rng)]
    except ValueError as e:
        raise ParamsError(f"suggest: {e}") from None
    return _feature_picks(params, scans, n, strategy)


def _drafts(
    params: Params,
    picks: list[tuple[int, int, float | None]],
    reader: object,
    scans: list[Scan],
    model: torch.nn.Module | None,
) -> list[Suggestion]:
    out = []
    volumes: dict[int, Volume] = {}
    for v, z, score in picks:
        if v not in volumes:
            volumes[v] = reader.load(scans[v].case, resize=False)  # type: ignore[attr-defined]
        volume = volumes[v]
        _, _, h, w = volume.image.shape
        if model is None:
            draft = np.zeros((h, w), np.uint8)
        else:
            image = _model_input(volume, params)[:, z : z + 1]
            draft = predict_volume(model, image, 1, out_hw=(h, w))[0]
        out.append(Suggestion(volume, z, score, draft))
    return out


def run(
    params: Params,
    out: Path,
    n: int,
    strategy: str | None = None,
    adapter: Path | None = None,
    seed: int | None = None,
) -> list[SliceRow]:
    """Suggest `n` new slices into the annotation folder `out`; returns the new manifest rows."""
    strategy = strategy or params.suggest.strategy
    if strategy not in ("spread", "random", "diverse", "uncertain"):
        raise ParamsError(f"suggest: unknown strategy {strategy!r}")
    if strategy == "uncertain" and adapter is None:
        raise ParamsError(
            "suggest: the uncertain strategy needs --adapter (a trained adapter folder)"
        )
    if n < 1:
        raise ParamsError(f"suggest: --n must be >= 1, got {n}")
    ensure_parent(Path(out) / MANIFEST)  # an unwritable folder fails before any scan is read
    reader = open_dataset(params.dataset, params.seed)
    cases = reader.cases("train")
    if not cases:
        raise InputError(reader.root, "no training scans to suggest slices from")
    rows = []
    if has_manifest(out):
        # A later round rewrites label files: never one the folder's checks refuse (a flipped or
        # re-gridded file would be written back on the scan's grid and its fault hidden).
        # Slices not painted yet are no reason to stop.
        checked = check_folder(reader, Path(out))
        refuse(checked.blocking, Path(out), "nothing written (`fewsam data check` lists them)")
        rows = checked.rows
    device = pick_device(params.train.device)
    model = None
    if adapter is not None:
        model, _ = load_adapter(adapter, num_classes=len(reader.classes))
        model = model.to(device)
    scans = _scans(params, reader, cases, rows, _facts_fn(params, strategy, model, device))
    picks = choose(params, scans, n, strategy, params.seed if seed is None else seed)
    suggestions = _drafts(params, picks, reader, scans, model)
    round_ = max((r.round for r in rows), default=0) + 1
    manifest = manifest_rows(Path(out), suggestions, strategy, round_, len(reader.classes), rows)
    new_rows = manifest[len(rows) :]
    write_manifest(Path(out), manifest)
    contact_sheet(Path(out) / SHEET, suggestions, new_rows, reader.classes)
    for row in new_rows:
        print(
            f"  #{row.rank} {row.case} slice {row.slice} (axis {row.axis}, {row.position_mm:.1f} mm)"
        )
    print(f"suggest: {len(new_rows)} slices ({strategy}, round {round_}) -> {Path(out) / MANIFEST}")
    return new_rows
