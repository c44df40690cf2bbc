"""Configs with classify sections for the tiny shapes CLIP (captions like "a red circle")."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from tests.conftest import write_config
from tests.tinyclip import SHAPES, classes, draw_shape

# The tiny model knows only its training captions, so the single template is their wording.
TEMPLATES = ["a {}"]


def colour_set(name: str, colour: str, flag: bool) -> dict[str, object]:
    """A label set whose labels are the shapes of one colour, all other shapes neutral."""
    return {
        "name": name,
        "labels": [f"{colour} {shape}" for shape in SHAPES],
        "neutral": [f"{other} {shape}" for other, shape in classes() if other != colour],
        "threshold": 0.5,
        "flag": flag,
    }


def write_classify_config(
    path: Path, model: Path, data_dir: Path, label_sets: list[dict[str, object]]
) -> Path:
    """`write_config` plus a classify section with the shapes template and these sets."""
    write_config(path, model, data_dir)
    settings = yaml.safe_load(path.read_text())
    settings["classify"] = {"templates": TEMPLATES, "label_sets": label_sets}
    path.write_text(yaml.safe_dump(settings))
    return path


def shapes_gallery(root: Path, per_class: int, seed: int = 2024) -> Path:
    """`per_class` random JPEGs of every (colour, shape), named colour_shape_N.jpg."""
    root.mkdir(parents=True)
    rng = random.Random(seed)
    for colour, shape in classes():
        for number in range(per_class):
            image = draw_shape(colour, shape, 128, rng)
            image.save(root / f"{colour}_{shape}_{number}.jpg", quality=88)
    return root


def colour_of(path: str) -> str:
    """The colour in a gallery file name."""
    return Path(path).name.split("_")[0]
