"""Which parts of synthesis an experiment used, and the grid points of the component ablation.

Synthesis has three parts, each switched by its probabilities in `params.yaml`'s `synth` section:
geometric transforms, intensity transforms and background pasting. The ablation adds them one at
a time, always with synthesis enabled (the same number of samples, the same exemplar balancing):
exemplars only (every probability 0: balanced copies of the exemplars) / + geometric /
+ intensity / + pasting (everything, the method as published). An experiment's variant is read
back from its params, so `fewsam report` needs no bookkeeping of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COMPONENTS: dict[str, tuple[str, ...]] = {
    "geometric": ("hflip_prob", "vflip_prob", "affine_prob", "elastic_prob"),
    "intensity": ("gamma_prob", "brightness_contrast_prob", "noise_prob", "blur_prob"),
    "pasting": ("paste_prob",),
}
# (label, name slug, components on), in the order they are added.
VARIANTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("exemplars only", "exonly", ()),
    ("+ geometric", "geo", ("geometric",)),
    ("+ intensity", "geo-int", ("geometric", "intensity")),
    ("+ pasting", "synth", ("geometric", "intensity", "pasting")),
)
FULL = VARIANTS[-1][0]
ABLATION_KEYS = tuple(f"synth.{key}" for keys in COMPONENTS.values() for key in keys)


def overrides(on: tuple[str, ...]) -> tuple[str, ...]:
    """`-S` items that switch off every component not in `on` (the others keep params.yaml's)."""
    return tuple(
        f"synth.{key}=0.0" for name, keys in COMPONENTS.items() if name not in on for key in keys
    )


def components_on(synth: Mapping[str, Any]) -> tuple[str, ...]:
    """The components with any probability > 0 in a `synth` params mapping, in COMPONENTS order.

    A missing key counts as on (experiments recorded before it existed used it).
    """
    return tuple(
        name
        for name, keys in COMPONENTS.items()
        if any(float(synth.get(key, 1.0) or 0.0) > 0 for key in keys)
    )


def variant(synth: Mapping[str, Any]) -> str:
    """The ablation label of a `synth` params mapping ("+ geometric", ...), or the components
    joined with "+" when they are no prefix of the ablation's order."""
    on = components_on(synth)
    for label, _, kept in VARIANTS:
        if kept == on:
            return label
    return " + ".join(on)
