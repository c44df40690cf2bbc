"""Dedup quality on a labelled set: precision and recall per tier and per transform.

200 photo-like originals (640x480), each with copies that are duplicates by label — a byte copy,
resized to half, recompressed at quality 50, cropped 10%, stored rotated with an EXIF orientation,
brightness +15% — plus 100 look-alikes (an original's scene with its content shifted) that are
*not* duplicates. Everything is indexed with pixseek (a random-weight full-size ViT-B/32 built
locally: the semantic tier's figures say what this model gives, not what a trained CLIP would)
and every tier is run at its configured default threshold.

Recall for a transform: the share of (original, copy) pairs that land in one group. Precision
of a tier: the share of pairs inside its groups that are labelled duplicates (same family).

    HF_HUB_OFFLINE=1 python bench/dedup_eval.py [--originals 200] [--workdir bench/out/dedup_eval]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).parent))
from index_cpu import ensure_model, make_image

from pixseek.config import Settings
from pixseek.indexer.pipeline import index_roots
from pixseek.library import Library
from pixseek.search.dedup import Finder

SIZE = (640, 480)
TRANSFORMS = ("byte copy", "resized", "quality 50", "cropped 10%", "exif-rotated", "brighter")


def _copies(original: Image.Image, path: Path) -> dict[str, Image.Image | bytes]:
    width, height = original.size
    rotated_exif = Image.Exif()
    rotated_exif[0x0112] = 6  # stored turned left; viewers (and pixseek) turn it back upright
    return {
        "byte copy": path.read_bytes(),
        "resized": original.resize((width // 2, height // 2), Image.Resampling.LANCZOS),
        "quality 50": original,
        "cropped 10%": original.crop(
            (width // 20, height // 20, width * 19 // 20, height * 19 // 20)
        ),
        "exif-rotated": (original.transpose(Image.Transpose.ROTATE_90), rotated_exif),
        "brighter": ImageEnhance.Brightness(original).enhance(1.15),
    }


def build(folder: Path, originals: int) -> dict[str, tuple[int, str]]:
    """Write the labelled set; returns path -> (family, transform)."""
    labels: dict[str, tuple[int, str]] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for family in range(originals):
        original = make_image(10_000 + family).resize(SIZE, Image.Resampling.LANCZOS)
        path = folder / f"{family:04d}-original.jpg"
        original.save(path, quality=90)
        labels[str(path)] = (family, "original")
        for name, copy in _copies(original, path).items():
            target = folder / f"{family:04d}-{name.replace(' ', '-').replace('%', '')}.jpg"
            if isinstance(copy, bytes):
                target.write_bytes(copy)
            elif isinstance(copy, tuple):
                copy[0].save(target, quality=90, exif=copy[1])
            else:
                copy.save(target, quality=50 if name == "quality 50" else 90)
            labels[str(target)] = (family, name)
        if family < 100:  # a look-alike: same scene, content shifted by a fifth of the width
            shifted = np.roll(np.asarray(original), SIZE[0] // 5, axis=1)
            target = folder / f"{family:04d}-lookalike.jpg"
            Image.fromarray(shifted).save(target, quality=90)
            labels[str(target)] = (originals + family, "look-alike")
    return labels


def evaluate(groups, labels: dict[str, tuple[int, str]]) -> tuple[float, dict[str, float], int]:
    """Precision over grouped pairs, recall per transform, and false pairs with look-alikes."""
    together: set[frozenset[str]] = set()
    for group in groups:
        paths = [member.path for member in group.members]
        together.update(frozenset(pair) for pair in itertools.combinations(paths, 2))
    true = sum(1 for pair in together if len({labels[path][0] for path in pair}) == 1)
    precision = true / len(together) if together else 1.0
    originals = {family: path for path, (family, kind) in labels.items() if kind == "original"}
    recall = {}
    for transform in TRANSFORMS:
        copies = [(p, f) for p, (f, kind) in labels.items() if kind == transform]
        found = sum(
            1 for path, family in copies if frozenset((path, originals[family])) in together
        )
        recall[transform] = found / len(copies)
    lookalike_pairs = sum(
        1 for pair in together if any(labels[path][1] == "look-alike" for path in pair)
    )
    return precision, recall, lookalike_pairs


def main() -> int:
    """Build, index, run every tier, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/dedup_eval"))
    args = parser.parse_args()
    work = args.workdir.absolute()
    model = work / "model"
    ensure_model(model)
    shutil.rmtree(work / "images", ignore_errors=True)
    shutil.rmtree(work / "data", ignore_errors=True)
    labels = build(work / "images", args.originals)
    settings = Settings(data_dir=work / "data", model={"name": str(model), "device": "cpu"})
    library = Library(settings, writer=True)
    started = time.perf_counter()
    report = index_roots(library, [work / "images"])
    print(f"indexed {report.added} files in {time.perf_counter() - started:.0f} s")
    finder = Finder(library)
    columns = ("tier", "threshold", "groups", "precision", "look-alike pairs", *TRANSFORMS)
    print("\n" + " | ".join(columns))
    for tier in ("exact", "near", "semantic"):
        started = time.perf_counter()
        groups = finder.groups(tier)
        spent = time.perf_counter() - started
        precision, recall, lookalikes = evaluate(groups, labels)
        threshold = {"exact": "-", "near": str(settings.dedup.near_hamming),
                     "semantic": str(settings.dedup.semantic_threshold)}[tier]  # fmt: skip
        cells = [tier, threshold, str(len(groups)), f"{precision:.3f}", str(lookalikes)]
        cells += [f"{recall[name]:.3f}" for name in TRANSFORMS]
        print(" | ".join(cells) + f"   ({spent:.2f} s)")
    library.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
