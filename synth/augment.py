"""The standard transforms of synthesis, built from `SynthParams` (the only albumentations user).

Two pipelines:
- geometric, on image and label together: flips, affine (rotation, scale, translation, shear),
  elastic deformation. Image with bilinear interpolation, label with nearest neighbour, both
  filled with 0 (background) where the transform pulls in pixels from outside the slice.
- intensity, on the image only: gamma, brightness/contrast, Gaussian blur, Gaussian noise, then a
  clip to [0, 1]. Each distinct channel (modality) gets its own draw, so the FLAIR and T2 of one
  MRI sample change independently; channels that carry the same name (a CT slice repeated into
  SAM's three channels) stay identical.

Randomness: albumentations draws from the generators handed to the pipeline. `Augmenter` resets
them from an explicit integer seed before every call, so a sample depends on its seed only, never
on which process made it or what that process made before.
"""

from __future__ import annotations

import os
import random
import sys
from functools import lru_cache

# Importing albumentations would otherwise ask PyPI for a newer version (network, up to 2 s).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# ... and import its PyTorch helpers, hence torch (about 0.5 GB resident per process, 1.5 s),
# which synthesis never uses. A None module entry makes that optional import fail quietly; it
# is removed afterwards, so an explicit `import albumentations.pytorch` elsewhere still works.
_skip_torch = "albumentations" not in sys.modules and "albumentations.pytorch" not in sys.modules
if _skip_torch:
    sys.modules["albumentations.pytorch"] = None  # type: ignore[assignment]
try:
    import albumentations as A  # noqa: E402
finally:
    if _skip_torch:
        del sys.modules["albumentations.pytorch"]
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from core.params import SynthParams  # noqa: E402

VERSION = A.__version__


def geometric_pipeline(p: SynthParams) -> A.Compose:
    """Flips, affine and elastic deformation with every range and probability from `p`."""
    return A.Compose(
        [
            A.HorizontalFlip(p=p.hflip_prob),
            A.VerticalFlip(p=p.vflip_prob),
            A.Affine(
                rotate=(-p.rotate_deg, p.rotate_deg),
                scale=p.scale,
                translate_percent=(-p.translate, p.translate),
                shear=(-p.shear_deg, p.shear_deg),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=p.affine_prob,
            ),
            A.ElasticTransform(
                alpha=p.elastic_alpha,
                sigma=p.elastic_sigma,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=p.elastic_prob,
            ),
        ]
    )


def intensity_pipeline(p: SynthParams) -> A.Compose:
    """Gamma, brightness/contrast, blur and noise for one channel in [0, 1] (image only).

    Gamma comes first, while every value is still >= 0 (a power of a negative value is NaN).
    """
    return A.Compose(
        [
            A.RandomGamma(gamma_limit=(p.gamma[0] * 100, p.gamma[1] * 100), p=p.gamma_prob),
            A.RandomBrightnessContrast(
                brightness_limit=(-p.brightness, p.brightness),
                contrast_limit=(-p.contrast, p.contrast),
                p=p.brightness_contrast_prob,
            ),
            A.GaussianBlur(blur_limit=0, sigma_limit=p.blur_sigma, p=p.blur_prob),
            # std_range is a fraction of the image's maximum value, 1.0 for float images.
            A.GaussNoise(std_range=p.noise_std, p=p.noise_prob),
        ]
    )


def _reseed(pipeline: A.Compose, seed: int) -> None:
    # One shared stream for the whole pipeline: `Compose.set_random_seed` would give every
    # transform its own generator with the same seed, correlating their decisions.
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


class Augmenter:
    """Both pipelines of one `SynthParams`, applied with an explicit seed per call.

    Not thread-safe (the pipelines' generators are reset per call); one per process.
    """

    def __init__(self, params: SynthParams) -> None:
        self.params = params
        self._geometric = geometric_pipeline(params)
        self._intensity = intensity_pipeline(params)

    def geometric(
        self, image: np.ndarray, label: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Transform `image` C x H x W float32 and `label` H x W uint8 together.

        Returns new arrays of the same shapes and dtypes; label ids are a subset of the input's
        ids plus 0 (nearest-neighbour sampling never invents an id).
        """
        _reseed(self._geometric, seed)
        out = self._geometric(
            image=np.ascontiguousarray(image.transpose(1, 2, 0), dtype=np.float32),
            mask=np.ascontiguousarray(label, dtype=np.uint8),
        )
        return np.ascontiguousarray(out["image"].transpose(2, 0, 1)), out["mask"]

    def intensity(
        self, image: np.ndarray, channels: tuple[str, ...], seeds: list[int]
    ) -> np.ndarray:
        """Intensity transforms of `image` C x H x W float32 in [0, 1], clipped to [0, 1].

        `channels` names the C channels; `seeds` holds one seed per distinct name (in order of
        first appearance): channels with the same name get the same draw. Returns a new
        C x H x W float32 array.
        """
        names = list(dict.fromkeys(channels))
        assert len(seeds) == len(names) and len(channels) == image.shape[0]
        out = np.empty(image.shape, dtype=np.float32)
        for c, name in enumerate(channels):
            _reseed(self._intensity, seeds[names.index(name)])
            plane = np.ascontiguousarray(image[c], dtype=np.float32)[:, :, None]
            out[c] = np.clip(self._intensity(image=plane)["image"][:, :, 0], 0.0, 1.0)
        return out


@lru_cache(maxsize=4)
def augmenter(params: SynthParams) -> Augmenter:
    """The process's `Augmenter` for `params` (built once: pipeline construction is not free)."""
    return Augmenter(params)
