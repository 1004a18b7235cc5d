"""Procedural images for pretraining a promptable segmenter: random textured shapes.

Each image holds a few to a dozen shapes (ellipses, star polygons, smooth blobs, thick curved
tubes), some nested inside others and some touching, painted in order onto a textured background
with a smooth intensity gradient. Shapes differ from what they cover by a contrast drawn on a log
scale, so low-contrast objects are common; soft edges, blur and noise follow. Most images are
grayscale replicated to three channels, as medical scans are fed to SAM; some are in colour.

Sizes are in pixels of the `size` x `size` image: radii from 4 to 64 px at 256 px, the scale of
abdominal organs on 128 px CT slices upsampled to 256.

The instance label map holds the visible part of each shape (later shapes occlude earlier ones);
of a shape split by occlusion only the largest piece keeps its id, and pieces or shapes smaller
than `MIN_AREA` are labeled background. Ids are 1..N in painting order, 0 is background.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from core import streams

# Stream keys: training and held-out images never share a generator.
MIN_AREA = 12
# Ranges drawn on a log scale (intensities in [0, 1]): contrast of a shape against what it covers,
# amplitude of its texture, amplitude of the background texture, image noise std. `difficulty`
# moves each range from its EASY end (clear shapes, the start of training) to its FULL end.
EASY = {
    "contrast": (0.15, 0.5),
    "texture": (0.003, 0.03),
    "ground": (0.005, 0.04),
    "noise": (0.002, 0.02),
}
FULL = {
    "contrast": (0.03, 0.45),
    "texture": (0.003, 0.1),
    "ground": (0.005, 0.12),
    "noise": (0.002, 0.06),
}
_KINDS = ("ellipse", "polygon", "blob", "tube")


def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _ranges(difficulty: float) -> dict[str, tuple[float, float]]:
    """The EASY..FULL ranges at `difficulty` in [0, 1], interpolated geometrically."""
    return {
        key: (
            EASY[key][0] ** (1 - difficulty) * FULL[key][0] ** difficulty,
            EASY[key][1] ** (1 - difficulty) * FULL[key][1] ** difficulty,
        )
        for key in FULL
    }


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered noise of scale `sigma` px, HxW float32."""
    # Wide filters are done at a lower resolution and upsampled: same look, a fraction of the cost.
    factor = max(1, int(sigma // 2))
    small = -(-size // factor)
    field = rng.standard_normal((small, small)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), sigma / factor)
    if factor > 1:
        field = cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A texture field (HxW float32, about unit std): filtered noise or oriented stripes."""
    if rng.random() < 0.75:
        return _smooth_noise(rng, size, _loguniform(rng, 0.7, 8.0))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), _loguniform(rng, 3.0, 20.0)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period)
    return (np.sin(phase + rng.uniform(0, 2 * np.pi)) * np.sqrt(2)).astype(np.float32)


def _gradient(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """A linear ramp of about `amplitude` peak to peak in a random direction, HxW float32."""
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = float(amplitude * np.cos(angle)), float(amplitude * np.sin(angle))
    return ramp[None, :] * cos + ramp[:, None] * sin


def _contour(rng: np.random.Generator, kind: str, radius: float) -> np.ndarray:
    """Closed outline around the origin, Kx2 float (x, y) pixels, for polygon and blob."""
    if kind == "polygon":
        k = int(rng.integers(3, 9))
        theta = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = radius * rng.uniform(0.55, 1.0, k)
    else:
        theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = np.ones_like(theta)
        for harmonic in range(2, 6):
            r += rng.uniform(0, 0.35 / harmonic) * np.cos(harmonic * theta + rng.uniform(0, 6.3))
        r = radius * r / r.max()
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def shape_mask(
    rng: np.random.Generator, kind: str, center: tuple[float, float], radius: float, size: int
) -> np.ndarray:
    """Filled shape `kind` at `center` (x, y) px with extent about `radius` px; HxW bool."""
    canvas = np.zeros((size, size), np.uint8)
    cx, cy = center
    shift = 4  # cv2 fixed-point: sub-pixel positions for small shapes
    if kind == "ellipse":
        axes = (radius, radius * rng.uniform(0.35, 1.0))
        box = ((cx, cy), (2 * axes[0], 2 * axes[1]), float(rng.uniform(0, 180)))
        cv2.ellipse(canvas, box, 1, thickness=-1)
    elif kind in ("polygon", "blob"):
        points = _contour(rng, kind, radius) + np.array([cx, cy])
        cv2.fillPoly(
            canvas, [np.round(points * (1 << shift)).astype(np.int32)], 1, cv2.LINE_8, shift
        )
    else:  # tube: a thick smooth arc, like a vessel or a bowel loop in cross-section
        t = np.linspace(-1, 1, 24)
        bend, angle = rng.uniform(-1.5, 1.5), rng.uniform(0, 2 * np.pi)
        along, across = t * radius, bend * radius * (t**2 - 0.5) * 0.5
        xs = cx + along * np.cos(angle) - across * np.sin(angle)
        ys = cy + along * np.sin(angle) + across * np.cos(angle)
        width = max(3, round(radius * rng.uniform(0.2, 0.45)))
        points = np.round(np.stack([xs, ys], 1) * (1 << shift)).astype(np.int32)
        cv2.polylines(canvas, [points], False, 1, width, cv2.LINE_8, shift)
    return canvas.astype(bool)


def _placement(
    rng: np.random.Generator, labels: np.ndarray, present: list[int]
) -> tuple[tuple[float, float], float]:
    """Centre (x, y) and radius of the next shape: free, nested inside or touching an earlier one."""
    size = labels.shape[0]
    mode = rng.random()
    if present and mode < 0.45:
        parent = labels == present[int(rng.integers(len(present)))]
        if parent.any():
            ys, xs = np.nonzero(parent)
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            crop = np.pad(parent[y0:y1, x0:x1], 1).astype(np.uint8)
            inside = cv2.distanceTransform(crop, cv2.DIST_L2, 3)[1:-1, 1:-1]
            if mode < 0.2 and inside.max() >= 6:  # nested: well inside the parent
                cy, cx = np.nonzero(inside >= 0.6 * inside.max())
                i = int(rng.integers(cx.size))
                radius = float(inside[cy[i], cx[i]] * rng.uniform(0.3, 0.7))
                return (float(cx[i] + x0), float(cy[i] + y0)), radius
            # touching: centred one radius beyond a point of the parent, away from its middle
            i, radius = int(rng.integers(xs.size)), _loguniform(rng, 4.0, 48.0) * size / 256
            direction = np.array([xs[i] - xs.mean(), ys[i] - ys.mean()])
            direction /= np.linalg.norm(direction) + 1e-6
            return (
                float(xs[i] + direction[0] * radius),
                float(ys[i] + direction[1] * radius),
            ), radius
    center = (float(rng.uniform(0, size)), float(rng.uniform(0, size)))
    return center, _loguniform(rng, 5.0, 80.0) * size / 256


def _clean_labels(labels: np.ndarray) -> np.ndarray:
    """Keep the largest piece of each shape, drop pieces under MIN_AREA, renumber 1..N."""
    out = np.zeros_like(labels)
    next_id = 1
    for value, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        piece = (labels[box] == value).astype(np.uint8)
        count, comp, stats, _ = cv2.connectedComponentsWithStats(piece, connectivity=4)
        areas = stats[1:, cv2.CC_STAT_AREA]
        if count > 1 and areas.max() >= MIN_AREA:
            out[box][comp == 1 + int(areas.argmax())] = next_id
            next_id += 1
    return out


def _paint(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    textures: list[np.ndarray],
    colour: bool,
    ranges: dict[str, tuple[float, float]],
) -> None:
    """Paint one shape into `image` (CxHxW float32, changed in place) inside `mask` (HxW bool)."""
    edge = _loguniform(rng, 0.3, 2.0)  # partial-volume softness of the edge, px
    pad = int(3 * edge) + 2
    ys, xs = np.nonzero(mask)
    y0, x0 = max(ys.min() - pad, 0), max(xs.min() - pad, 0)
    y1, x1 = ys.max() + pad + 1, xs.max() + pad + 1
    region, inner = image[:, y0:y1, x0:x1], mask[y0:y1, x0:x1]
    covered = region[:, inner].mean(axis=1).reshape(-1, 1, 1)
    contrast = _loguniform(rng, *ranges["contrast"]) * rng.choice([-1.0, 1.0])
    if not 0.02 < float(covered.mean()) + contrast < 0.98:
        contrast = -contrast  # flip rather than clip, so the contrast survives
    fill = covered + contrast
    if colour:
        fill = fill + rng.normal(0, 0.12, (3, 1, 1))
    texture = textures[int(rng.integers(len(textures)))][y0:y1, x0:x1]
    fill = fill + texture * _loguniform(rng, *ranges["texture"])
    fill = fill + _gradient(rng, image.shape[1], rng.uniform(0, 0.15))[y0:y1, x0:x1]
    alpha = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), edge)
    # Labeled pixels are at least half shape, unlabeled ones at most half: labels match the image.
    alpha = np.where(inner, np.maximum(alpha, 0.5), np.minimum(alpha, 0.5))
    region[...] = alpha * fill + (1 - alpha) * region


def render_shapes(
    rng: np.random.Generator, size: int = 256, difficulty: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its instance labels drawn with `rng`, at `difficulty` in [0, 1].

    Returns the image, 3 x size x size float32 in [0, 1] (RGB; the channels are equal for
    grayscale images), and the labels, size x size int32 (0 background, 1..N instances).
    """
    ranges = _ranges(difficulty)
    colour = rng.random() < 0.25
    n_channels = 3 if colour else 1
    textures = [_texture(rng, size) for _ in range(3)]
    base = rng.uniform(0.15, 0.85, (n_channels, 1, 1)).astype(np.float32)
    image = base + _gradient(rng, size, rng.uniform(0, 0.4)) + _smooth_noise(rng, size, 30) * 0.05
    image = (image + textures[0] * _loguniform(rng, *ranges["ground"])).astype(np.float32)
    labels = np.zeros((size, size), np.int32)
    present: list[int] = []
    for shape_id in range(1, int(rng.integers(4, 17)) + 1):
        center, radius = _placement(rng, labels, present)
        mask = shape_mask(rng, str(rng.choice(_KINDS)), center, max(radius, 2.5), size)
        if mask.sum() < MIN_AREA:
            continue
        _paint(rng, image, mask, textures, colour, ranges)
        labels[mask] = shape_id
        present.append(shape_id)
    blur = rng.uniform(0, 1.2)
    if blur > 0.3:
        image = np.stack([cv2.GaussianBlur(c, (0, 0), blur) for c in image])
    image = image + rng.normal(0, _loguniform(rng, *ranges["noise"]), image.shape)
    image = np.clip(image, 0, 1).astype(np.float32)
    if not colour:
        image = np.repeat(image, 3, axis=0)
    return image, _clean_labels(labels)


def sample(
    seed: int, index: int, held_out: bool = False, size: int = 256, difficulty: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Image `index` of the training (or held-out) stream; same arguments -> same arrays.

    Returns (image 3xSxS float32 in [0, 1], labels SxS int32), as `render_shapes`.
    """
    stream = streams.PRETRAIN_HELD_OUT if held_out else streams.PRETRAIN_SHAPES
    return render_shapes(np.random.default_rng([seed, stream, index]), size, difficulty)
