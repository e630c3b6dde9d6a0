"""A synthetic image domain of coloured shapes, with natural-language captions.

Used to train the bundled ``tiny-shapes`` CLIP model (``embedders.train_tiny_clip``), to
render the demo gallery, and by examples. Eight colours x five shapes, drawn at any
position, size and rotation on grey or muted backgrounds, on canvases of 48-512 px.
Colours are sampled from a range of hue, saturation and brightness around each name
(``"orange"`` covers CSS orange and darkorange; ``"green"`` both lime and dark green), so
other people's renderings of "a red circle" fall inside it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = render_shape("red", "circle", size=96, rng=rng)
    >>> image.size
    (96, 96)
    >>> caption("orange", "star")
    'an orange star'
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "COLOURS",
    "SHAPES",
    "ShapeScene",
    "augment",
    "background_word",
    "caption",
    "class_index",
    "random_scene",
    "render",
    "render_gallery",
    "render_shape",
    "sample_colour",
    "training_example",
]

SHAPES = ("circle", "square", "triangle", "star", "cross")

# name -> (hue range in degrees, saturation range, value range); hue ranges may wrap at 360.
_HSV: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "red": ((345.0, 370.0), (0.70, 1.0), (0.50, 1.0)),
    "orange": ((18.0, 40.0), (0.80, 1.0), (0.85, 1.0)),
    "yellow": ((49.0, 64.0), (0.70, 1.0), (0.85, 1.0)),
    "green": ((88.0, 150.0), (0.60, 1.0), (0.40, 1.0)),
    "blue": ((200.0, 245.0), (0.65, 1.0), (0.45, 1.0)),
    "purple": ((265.0, 305.0), (0.45, 1.0), (0.40, 0.95)),
    "white": ((0.0, 360.0), (0.0, 0.07), (0.90, 1.0)),
    "black": ((0.0, 360.0), (0.0, 0.35), (0.0, 0.16)),
}
COLOURS = tuple(_HSV)
_ACHROMATIC = {"white", "black"}


@dataclass(frozen=True)
class ShapeScene:
    """Everything needed to draw one picture.

    Attributes:
        colour: A name from :data:`COLOURS`.
        shape: A name from :data:`SHAPES`.
        width: Canvas width in pixels.
        height: Canvas height in pixels.
        center: Shape centre as fractions of width and height.
        size: Shape diameter as a fraction of the shorter canvas side.
        rotation: Degrees, counter-clockwise.
        rgb: Fill colour.
        background: ``"grey"``, ``"muted"``, ``"gradient"`` or ``"noise"``.
        background_rgb: Base background colour (and the second gradient stop).
        antialias: Draw with 4x supersampling.
        seed: Seeds background noise and shape details.
    """

    colour: str
    shape: str
    width: int
    height: int
    center: tuple[float, float]
    size: float
    rotation: float
    rgb: tuple[int, int, int]
    background: str
    background_rgb: tuple[tuple[int, int, int], tuple[int, int, int]]
    antialias: bool
    seed: int


def sample_colour(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """An RGB shade inside the range of a colour name.

    Example:
        >>> r, g, b = sample_colour("red", np.random.default_rng(0))
        >>> r > g and r > b
        True
    """
    try:
        (h0, h1), (s0, s1), (v0, v1) = _HSV[colour]
    except KeyError:
        raise ValueError(f"unknown colour {colour!r}; choose one of {list(COLOURS)}") from None
    h = (rng.uniform(h0, h1) % 360.0) / 360.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1))
    return (round(r * 255), round(g * 255), round(b * 255))


def _luma(rgb: tuple[int, int, int]) -> float:
    r, g, b = rgb
    return (0.299 * r + 0.587 * g + 0.114 * b) / 255.0


def _background_rgb(rng: np.random.Generator, colour: str, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    # Grey or muted (low saturation) backgrounds, kept far enough in brightness from
    # white/black shapes that the shape stays visible.
    for _ in range(100):
        sat = 0.0 if rng.random() < 0.5 else rng.uniform(0.05, 0.3)
        r, g, b = colorsys.hsv_to_rgb(rng.random(), sat, rng.uniform(0.25, 0.82))
        bg = (round(r * 255), round(g * 255), round(b * 255))
        if colour not in _ACHROMATIC or abs(_luma(bg) - _luma(rgb)) > 0.25:
            return bg
    return (128, 128, 128)


def random_scene(
    rng: np.random.Generator,
    colour: str | None = None,
    shape: str | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
) -> ShapeScene:
    """Sample a scene; colour, shape and canvas size are random unless given.

    Example:
        >>> random_scene(np.random.default_rng(0), "blue", "star", width=64, height=64).shape
        'star'
    """
    colour = colour or COLOURS[rng.integers(len(COLOURS))]
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    if width is None or height is None:
        side = int(rng.integers(48, 513))
        if rng.random() < 0.3:  # non-square canvases too, within 3:4..4:3
            width, height = side, int(np.clip(side * rng.uniform(0.75, 1.33), 48, 512))
        else:
            width, height = side, side
    size = float(rng.uniform(0.22, 0.92))
    half = size / 2 * min(width, height)
    cx = rng.uniform(half, width - half) / width
    cy = rng.uniform(half, height - half) / height
    rgb = sample_colour(colour, rng)
    bg = _background_rgb(rng, colour, rgb)
    bg2 = _background_rgb(rng, colour, rgb)
    kind = ("grey", "muted", "gradient", "noise")[rng.integers(4)]
    if kind == "grey":
        grey = bg[0]
        bg = (grey, grey, grey) if colour not in _ACHROMATIC else bg
    return ShapeScene(
        colour=colour, shape=shape, width=width, height=height, center=(cx, cy), size=size,
        rotation=float(rng.uniform(0, 360)), rgb=rgb, background=kind, background_rgb=(bg, bg2),
        antialias=bool(rng.random() < 0.6), seed=int(rng.integers(2**31)),
    )


def _polygon(
    shape: str, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(4) * math.pi / 2 + math.pi / 4]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    elif shape == "star":
        inner = r * rng.uniform(0.38, 0.5)
        pts = [
            ((r if k % 2 == 0 else inner) * math.cos(a), (r if k % 2 == 0 else inner) * math.sin(a))
            for k, a in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)
        ]
    elif shape == "cross":
        w = r * rng.uniform(0.22, 0.36)
        pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
               (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {list(SHAPES)}")
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in pts]


def _background(scene: ShapeScene, rng: np.random.Generator) -> np.ndarray:
    h, w = scene.height, scene.width
    a = np.array(scene.background_rgb[0], dtype=np.float32)
    b = np.array(scene.background_rgb[1], dtype=np.float32)
    if scene.background == "gradient":
        theta = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx / w - 0.5) * math.cos(theta) + (yy / h - 0.5) * math.sin(theta) + 0.5
        t = np.clip(t, 0, 1)[..., None]
        return a * (1 - t) + b * t
    base = np.broadcast_to(a, (h, w, 3)).astype(np.float32)
    if scene.background == "noise":
        sigma = rng.uniform(4, 22)
        if rng.random() < 0.5:  # blotchy, low-frequency noise
            small = rng.normal(0, sigma, (max(2, h // 16), max(2, w // 16), 1)).astype(np.float32)
            from PIL import Image

            smooth = Image.fromarray(small[..., 0]).resize((w, h), Image.Resampling.BILINEAR)
            noise = np.asarray(smooth)[..., None]
        else:
            noise = rng.normal(0, sigma, (h, w, 1)).astype(np.float32)
        base = base + noise
    return base


def render(scene: ShapeScene) -> PILImage.Image:
    """Draw a scene as an RGB PIL image.

    Example:
        >>> render(random_scene(np.random.default_rng(3), width=50, height=60)).size
        (50, 60)
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(scene.seed)
    # Supersample to antialias; big canvases need less (and 4x of 512 px is slow to draw).
    side = max(scene.width, scene.height)
    scale = (4 if side <= 128 else 2 if side <= 300 else 1) if scene.antialias else 1
    w, h = scene.width * scale, scene.height * scale
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = scene.center[0] * w, scene.center[1] * h
    r = scene.size / 2 * min(w, h)
    if scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(scene.shape, cx, cy, r, math.radians(scene.rotation), rng), fill=255)
    if scale > 1:
        mask = mask.resize((scene.width, scene.height), Image.Resampling.BOX)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    canvas = _background(scene, rng) * (1 - alpha) + np.array(scene.rgb, np.float32) * alpha
    return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")


def render_shape(
    colour: str, shape: str, *, size: int = 128, rng: np.random.Generator | None = None
) -> PILImage.Image:
    """A square picture of one ``colour`` ``shape``, otherwise random.

    Example:
        >>> render_shape("green", "triangle", size=64).size
        (64, 64)
    """
    rng = rng if rng is not None else np.random.default_rng()
    return render(random_scene(rng, colour, shape, width=size, height=size))


# Caption templates; {a} is "a"/"an" for the word that follows it.
_TEMPLATES = (
    "{a} {colour} {shape}",
    "{colour} {shape}",
    "a photo of {a} {colour} {shape}",
    "a picture of {a} {colour} {shape}",
    "an image of {a} {colour} {shape}",
    "a drawing of {a} {colour} {shape}",
    "the {colour} {shape}",
    "{a} {colour} {shape} shape",
    "{a} {colour} {shape} on a {background} background",
    "{a} {sized} {colour} {shape}",
    "a photo of {a} {sized} {colour} {shape}",
    "{a} {sized} {colour} {shape} on a {background} background",
    "a {shape} that is {colour}",
    "{colour} coloured {shape}",
    "a {colour} {shape} icon",
)


def caption(
    colour: str,
    shape: str,
    rng: np.random.Generator | None = None,
    *,
    size: float | None = None,
    background: str = "grey",
) -> str:
    """A natural caption for a colour and shape; the first template when ``rng`` is None.

    Args:
        colour: A colour name.
        shape: A shape name.
        rng: Picks a template at random; ``None`` gives the plain ``"a red circle"`` form.
        size: The shape's size fraction, to pick a truthful "small"/"large" adjective.
        background: Background word used by templates that mention it.

    Example:
        >>> caption("orange", "cross")
        'an orange cross'
    """
    template = _TEMPLATES[0] if rng is None else _TEMPLATES[rng.integers(len(_TEMPLATES))]
    if size is None:
        sized = "small" if rng is None or rng.random() < 0.5 else "large"
    else:
        sized = "small" if size < 0.45 else ("large" if size > 0.7 else "medium sized")
        if rng is not None and sized == "large" and rng.random() < 0.4:
            sized = "big"
    if rng is not None and background == "grey" and rng.random() < 0.3:
        background = "gray"
    text = template.format(colour=colour, shape=shape, sized=sized, background=background, a="{a}")
    # Choose the article from the word right after it ("an orange", "a small").
    words = text.split(" ")
    for i, word in enumerate(words[:-1]):
        if word == "{a}":
            words[i] = "an" if words[i + 1][0] in "aeiou" else "a"
    return " ".join(words)


def augment(image: PILImage.Image, rng: np.random.Generator) -> PILImage.Image:
    """Photometric damage on top of a render: blur, sensor noise, JPEG compression.

    Example:
        >>> augment(render_shape("red", "star", size=48), np.random.default_rng(0)).size
        (48, 48)
    """
    from PIL import Image, ImageFilter

    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.3))))
    if rng.random() < 0.25:
        noise = rng.normal(0, rng.uniform(2, 10), (image.height, image.width, 1))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.35:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=int(rng.integers(25, 95)))
        image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return image


def class_index(colour: str, shape: str) -> int:
    """Index of a (colour, shape) pair among the ``len(COLOURS) * len(SHAPES)`` classes.

    Example:
        >>> class_index("red", "square")
        1
    """
    return COLOURS.index(colour) * len(SHAPES) + SHAPES.index(shape)


def background_word(scene: ShapeScene) -> str:
    """How a caption may describe the scene's background.

    Example:
        >>> background_word(random_scene(np.random.default_rng(0))) in {"grey", "plain", "gradient", "noisy"}
        True
    """
    return {"grey": "grey", "noise": "noisy", "muted": "plain"}.get(scene.background, "gradient")


def training_example(rng: np.random.Generator) -> tuple[PILImage.Image, str, int]:
    """One augmented training picture, a random caption for it, and its :func:`class_index`.

    Example:
        >>> image, text, label = training_example(np.random.default_rng(0))
        >>> 0 <= label < len(COLOURS) * len(SHAPES)
        True
    """
    scene = random_scene(rng)
    image = augment(render(scene), rng)
    text = caption(scene.colour, scene.shape, rng, size=scene.size, background=background_word(scene))
    return image, text, class_index(scene.colour, scene.shape)


def render_gallery(out_dir: str | Path, *, seed: int = 7, per_class: int = 1, size: int = 96) -> list[Path]:
    """Write demo PNGs named ``{colour}_{shape}[_{n}].png``: every colour with every shape.

    Example:
        >>> import tempfile
        >>> len(render_gallery(tempfile.mkdtemp(), size=48))
        40
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for colour in COLOURS:
        for shape in SHAPES:
            for n in range(per_class):
                scene = random_scene(rng, colour, shape, width=size, height=size)
                # Gallery pictures are for people: keep shapes clearly visible.
                scene = replace(scene, size=max(scene.size, 0.45), center=(0.5, 0.5), antialias=True)
                path = out / (f"{colour}_{shape}.png" if n == 0 else f"{colour}_{shape}_{n + 1}.png")
                render(scene).save(path, optimize=True)
                paths.append(path)
    return paths
