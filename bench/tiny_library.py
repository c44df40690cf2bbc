"""Inputs of the reliability benches: a tiny random CLIP, small distinct JPEGs and a config.

The tiny model (tests/tinyclip.py) keeps the model out of the way, so what these benches measure
is the bookkeeping around it: crashes, events, decoding.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tiny CLIP is built by tests/tinyclip.py

from tests.tinyclip import build_random_clip, caption, classes, draw_shape  # noqa: E402

T = TypeVar("T")
QUERIES = [caption(colour, shape) for colour, shape in classes()]


def tiny_model(folder: Path) -> Path:
    """A random-weight tiny CLIP saved in `folder` (built once, then reused)."""
    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        build_random_clip(folder)
    return folder


def jpeg_bytes(number: int, size: int = 64) -> bytes:
    """A small JPEG whose content differs for every `number`."""
    colour, shape = classes()[number % len(classes())]
    image = draw_shape(colour, shape, size, random.Random(number))
    image.putpixel((0, 0), (number % 256, number // 256 % 256, number // 65536 % 256))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write_jpegs(folder: Path, start: int, count: int) -> list[Path]:
    """Write `count` distinct JPEGs named by number into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(start, start + count):
        path = folder / f"{number:05d}.jpg"
        path.write_bytes(jpeg_bytes(number))
        paths.append(path)
    return paths


def write_config(path: Path, model: Path, data: Path, **sections: dict) -> Path:
    """A CPU, fp32 config for the tiny model; `sections` are merged in (e.g. watch={...})."""
    settings: dict = {
        "data_dir": str(data),
        "model": {"name": str(model), "device": "cpu", "dtype": "fp32", "batch_size": 16},
        "indexer": {"workers": 1},
    }
    for name, values in sections.items():
        settings[name] = settings.get(name, {}) | values
    path.write_text(json.dumps(settings))
    return path


def parse_options(defaults: T, description: str, workdir: Path) -> tuple[T, Path]:
    """Command-line flags for every field of the `defaults` dataclass, plus --workdir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", type=Path, default=workdir)
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    values = {name: getattr(args, name) for name in asdict(defaults)}
    return type(defaults)(**values), args.workdir.absolute()
