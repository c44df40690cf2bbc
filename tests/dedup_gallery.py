"""A small library with planted duplicates of every tier, drawn locally.

- exact: `scenes/scene0.png` and a byte copy in `scenes/copies/`;
- near-exact: `scenes/scene1.png` and a half-size JPEG at quality 50;
- semantic: `shapes/red-circle.png`, a 10% crop of it and a brightened edit;
- distinct: four other scenes and three other shapes, which must not join any of those groups.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance

from tests.tinyclip import draw_shape

EXACT = {"scenes/scene0.png", "scenes/copies/scene0-copy.png"}
NEAR = {"scenes/scene1.png", "scenes/scene1-small.jpg"}
SEMANTIC = {"shapes/red-circle.png", "shapes/red-circle-crop.jpg", "shapes/red-circle-bright.jpg"}
DISTINCT_SCENES = [f"scenes/scene{n}.png" for n in range(2, 6)]
DISTINCT_SHAPES = [
    "shapes/blue-square.png",
    "shapes/green-triangle.png",
    "shapes/yellow-square.png",
]


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A busy picture: a two-colour gradient under a dozen random discs and boxes."""
    rng = random.Random(seed)
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    top, bottom = ([rng.randint(0, 255) for _ in range(3)] for _ in range(2))
    for y in range(size[1]):
        t = y / size[1]
        colour = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (size[0], y)], fill=colour)
    for _ in range(12):
        x, y, r = rng.randint(0, size[0]), rng.randint(0, size[1]), rng.randint(10, 70)
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x - r, y - r, x + r, y + r], fill=fill)
    return image


def build(root: Path) -> Path:
    """Write the gallery under `root`; returns `root`."""
    (root / "scenes" / "copies").mkdir(parents=True)
    (root / "shapes").mkdir()
    for number in range(6):
        scene(number).save(root / f"scenes/scene{number}.png")
    shutil.copyfile(root / "scenes/scene0.png", root / "scenes/copies/scene0-copy.png")
    scene(1).resize((160, 120), Image.Resampling.LANCZOS).save(
        root / "scenes/scene1-small.jpg", quality=50
    )
    circle = draw_shape("red", "circle", 160, random.Random(11))
    circle.save(root / "shapes/red-circle.png")
    circle.crop((16, 16, 160, 160)).save(root / "shapes/red-circle-crop.jpg", quality=90)
    ImageEnhance.Brightness(circle).enhance(1.15).save(
        root / "shapes/red-circle-bright.jpg", quality=90
    )
    for name, seed in zip(DISTINCT_SHAPES, (12, 13, 14), strict=True):
        colour, shape = Path(name).stem.split("-")
        draw_shape(colour, shape, 160, random.Random(seed)).save(root / name)
    return root
