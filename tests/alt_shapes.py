"""An independent renderer of coloured shapes, for held-out evaluation of ``tiny-shapes``.

Written separately from ``embedders/shapes.py`` on purpose: shapes are rasterised with
numpy (point-in-polygon and distance tests on a supersampled pixel grid, not PIL's
polygon filler), colours come from fixed palettes of named shades (CSS-like, not sampled
in HSV), and backgrounds use other styles (split tones, vignettes, checkers, stripes).
A model that only learned the training renderer's quirks fails on these pictures.

Example:
    >>> images, labels = alt_dataset(per_class=1, seed=0)
    >>> len(images), images[0].dtype, images[0].ndim
    (40, dtype('uint8'), 3)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ALT_COLOURS", "ALT_SHAPES", "alt_dataset", "alt_render"]

ALT_SHAPES = ("circle", "square", "triangle", "star", "cross")
ALT_COLOURS: dict[str, list[tuple[int, int, int]]] = {
    "red": [(220, 20, 60), (178, 34, 34), (255, 0, 0), (205, 45, 40), (190, 10, 20)],
    "green": [(0, 128, 0), (34, 139, 34), (50, 205, 50), (46, 160, 90), (0, 200, 0)],
    "blue": [(0, 0, 255), (30, 80, 220), (65, 105, 225), (0, 90, 200), (20, 40, 160)],
    "yellow": [(255, 215, 0), (255, 255, 0), (240, 230, 40), (250, 220, 60), (255, 240, 90)],
    "orange": [(255, 140, 0), (255, 165, 0), (240, 120, 30), (230, 126, 34), (255, 150, 40)],
    "purple": [(128, 0, 128), (138, 43, 226), (148, 0, 211), (120, 60, 170), (150, 70, 200)],
    "white": [(255, 255, 255), (245, 245, 245), (250, 250, 240), (238, 240, 245)],
    "black": [(0, 0, 0), (20, 20, 20), (30, 30, 40), (10, 12, 8)],
}
_GREYS = [(96, 96, 96), (112, 112, 112), (128, 128, 128), (150, 150, 150), (170, 170, 170)]
_MUTED = [(150, 140, 120), (120, 130, 140), (140, 150, 130), (135, 120, 130), (110, 115, 105)]


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    style = rng.choice(["flat", "muted", "split", "vignette", "checker", "stripes", "smooth"])
    base = np.array((_GREYS + _MUTED)[rng.integers(len(_GREYS) + len(_MUTED))], np.float64)
    if style == "flat":
        base = np.array(_GREYS[rng.integers(len(_GREYS))], np.float64)
    img = np.ones((h, w, 3)) * base
    yy, xx = np.mgrid[0:h, 0:w]
    if style == "split":
        other = np.array(_MUTED[rng.integers(len(_MUTED))], np.float64)
        img[:, : w // 2] = other
    elif style == "vignette":
        d = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
        img = img * (1.1 - 0.5 * d)[..., None]
    elif style == "checker":
        tile = int(rng.integers(4, 17))
        img = img + (((yy // tile + xx // tile) % 2) * 16 - 8)[..., None]
    elif style == "stripes":
        period = int(rng.integers(6, 24))
        img = img + (8 * np.sin(2 * math.pi * (xx + yy) / period))[..., None]
    elif style == "smooth":
        coarse = rng.normal(0, 12, (h // 24 + 2, w // 24 + 2))
        img = img + np.kron(coarse, np.ones((24, 24)))[:h, :w, None]
    return np.clip(img, 0, 255)


def _inside_polygon(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    # Crossing-number test, vectorised over all sample points.
    inside = np.zeros(px.shape, bool)
    n = len(verts)
    for i in range(n):
        x1, y1 = verts[i]
        x2, y2 = verts[(i + 1) % n]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (x2 - x1) * (py - y1) / (y2 - y1) + x1
        inside ^= crosses & (px < x_at)
    return inside


def _coverage(
    shape: str, h: int, w: int, cx: float, cy: float, r: float, angle: float, ss: int
) -> np.ndarray:
    # Only the shape's bounding box is sampled; everything outside has zero coverage.
    y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
    x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
    full = np.zeros((h, w))
    full[y0:y1, x0:x1] = _box_coverage(shape, y0, y1, x0, x1, cx, cy, r, angle, ss)
    return full


def _box_coverage(
    shape: str, y0: int, y1: int, x0: int, x1: int, cx: float, cy: float, r: float, angle: float, ss: int
) -> np.ndarray:
    h, w = y1 - y0, x1 - x0
    offsets = (np.arange(ss) + 0.5) / ss
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    py, px = np.meshgrid(ys, xs, indexing="ij")
    # Rotate sample points into the shape's frame (rotation about the centre).
    dx, dy = px - cx, py - cy
    c, s = math.cos(-angle), math.sin(-angle)
    x, y = dx * c - dy * s, dx * s + dy * c
    if shape == "circle":
        m = x * x + y * y <= r * r
    elif shape == "square":
        half = r * 0.72
        m = (np.abs(x) <= half) & (np.abs(y) <= half)
    elif shape == "cross":
        arm, thick = r * 0.95, r * 0.3
        m = ((np.abs(x) <= thick) & (np.abs(y) <= arm)) | ((np.abs(x) <= arm) & (np.abs(y) <= thick))
    elif shape == "triangle":
        ang = np.array([90, 210, 330]) * math.pi / 180
        verts = np.stack([r * np.cos(ang), -r * np.sin(ang)], axis=1)
        m = _inside_polygon(x, y, verts)
    elif shape == "star":
        k = np.arange(10)
        rad = np.where(k % 2 == 0, r, r * 0.42)
        ang = math.pi / 2 + k * math.pi / 5
        verts = np.stack([rad * np.cos(ang), -rad * np.sin(ang)], axis=1)
        m = _inside_polygon(x, y, verts)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m.reshape(h, ss, w, ss).mean(axis=(1, 3))


def alt_render(colour: str, shape: str, rng: np.random.Generator) -> np.ndarray:
    """Render one picture as an RGB uint8 array (H, W, 3) with random geometry and style.

    Example:
        >>> alt_render("red", "star", np.random.default_rng(0)).dtype
        dtype('uint8')
    """
    h = int(rng.integers(48, 513))
    w = h if rng.random() < 0.7 else int(np.clip(h * rng.uniform(0.8, 1.25), 48, 512))
    bg = _background(h, w, rng)
    r = rng.uniform(0.14, 0.42) * min(h, w)
    cx = rng.uniform(r, w - r)
    cy = rng.uniform(r, h - r)
    ss = 3 if rng.random() < 0.6 else 1  # antialiased or hard edges
    cov = _coverage(shape, h, w, cx, cy, r, rng.uniform(0, 2 * math.pi), ss)[..., None]
    palette = ALT_COLOURS[colour]
    fill = np.array(palette[rng.integers(len(palette))], np.float64)
    fill = np.clip(fill + rng.integers(-8, 9, 3), 0, 255)
    out = bg * (1 - cov) + fill * cov
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def alt_dataset(per_class: int = 8, seed: int = 12345) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
    """``per_class`` pictures of every (colour, shape) pair, with their labels.

    Example:
        >>> _, labels = alt_dataset(per_class=1)
        >>> labels[0]
        ('red', 'circle')
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for colour in ALT_COLOURS:
        for shape in ALT_SHAPES:
            for _ in range(per_class):
                images.append(alt_render(colour, shape, rng))
                labels.append((colour, shape))
    return images, labels
