"""Shared fixtures: tiny CLIP models built locally, image galleries, and a CLI runner."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The trained tiny CLIP is trained in each session, so its similarities (which the dedup and
# search tests rely on) follow torch's CPU kernels, and those differ with the CPU's vector
# instructions: on one machine two random scenes came out at cosine 0.92 with the AVX-512
# kernels, 0.86 with the AVX2 ones. torch's plain kernels and MKL's reproducible mode take
# the CPU's own instructions out of it (there the dedup tests failed with either kernel set,
# and pass with these).
os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import pillow_heif
import pytest
import yaml
from typer.testing import CliRunner

from pixseek.cli import app
from tests.chroma_server import running_chroma
from tests.tinyclip import COLOURS, SHAPES, build_random_clip, draw_shape, train_shapes_clip

pillow_heif.register_heif_opener()  # test images are written as HEIC too


@pytest.fixture(scope="session")
def random_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny CLIP saved locally (for parity and bookkeeping tests)."""
    return build_random_clip(tmp_path_factory.mktemp("random-clip"))


@pytest.fixture(scope="session")
def trained_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP trained in this session on coloured shapes (for search quality tests)."""
    return train_shapes_clip(tmp_path_factory.mktemp("trained-clip"))


@dataclass
class Cli:
    """Runs `pixseek` in-process against one data dir and config file."""

    config: Path

    def run(self, *args: str, expect: int = 0) -> str:
        result = CliRunner().invoke(app, [*args, "--config", str(self.config)])
        assert result.exit_code == expect, (result.exit_code, result.output, result.exception)
        return result.output

    def json(self, *args: str) -> object:
        return json.loads(self.run(*args, "--json"))

    def index(self, *paths: Path, allow_deletes: bool = False) -> dict:
        extra = ["--allow-deletes"] if allow_deletes else []
        return self.json("index", *map(str, paths), *extra)


def write_config(path: Path, model: Path, data_dir: Path, **indexer: object) -> Path:
    """A config file for tests: CPU, fp32, one decode worker."""
    settings = {
        "data_dir": str(data_dir),
        "model": {"name": str(model), "device": "cpu", "dtype": "fp32", "batch_size": 16},
        "indexer": {"workers": 1, **indexer},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
def cli(tmp_path: Path, random_clip: Path) -> Cli:
    """A CLI bound to a fresh data dir and the random tiny model."""
    return Cli(write_config(tmp_path / "config.yaml", random_clip, tmp_path / "data"))


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    """12 distinct JPEGs (one per colour and shape), some in a subfolder."""
    root = tmp_path / "gallery"
    rng = random.Random(7)
    for number, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        folder = root / ("sub" if number % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        draw_shape(colour, shape, 96, rng).save(folder / f"{colour}-{shape}.jpg", quality=92)
    return root


@pytest.fixture
def chroma_server(tmp_path: Path):
    """The port of a real `chroma run` server on a fresh directory."""
    with running_chroma(tmp_path / "server") as port:
        yield port
