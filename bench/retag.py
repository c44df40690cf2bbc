"""Re-tagging benchmark: how long editing `classify.label_sets` costs, with no image model run.

Builds N records (random unit vectors for a locally built tiny random CLIP, 32-d) in the
catalog and in embedded Chroma, tags them with one label set, then changes the set and times
`sync_tags`: scoring every cached vector (matrix products in batches) and rewriting the
metadata of the records whose tags changed. Also prints the cost of an unchanged check, which
every index run and watcher reconcile pays. Run from the repository root:

    HF_HUB_OFFLINE=1 python bench/retag.py                    # 20,000 records
    HF_HUB_OFFLINE=1 python bench/retag.py --records 100000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1]))

from pixseek.catalog import INDEXED, FileRow, record_id
from pixseek.config import Settings
from pixseek.indexer.tagging import Tagger, sync_tags
from pixseek.library import Library
from tests.tinyclip import SHAPES, build_random_clip


def label_sets(colour: str) -> list[dict[str, object]]:
    """One flagging set; a low threshold so that a good share of random vectors gets tags."""
    others = [c for c in ("red", "green", "blue", "yellow") if c != colour]
    return [
        {
            "name": "alert",
            "labels": [f"{colour} {shape}" for shape in SHAPES],
            "neutral": [f"{other} {shape}" for other in others for shape in SHAPES],
            "threshold": 0.1,
            "flag": True,
        }
    ]


def open_library(base: Path, model: Path, colour: str) -> Library:
    settings = Settings.model_validate(
        {
            "data_dir": str(base / "data"),
            "model": {"name": str(model), "device": "cpu", "dtype": "fp32"},
            "classify": {"templates": ["a {}"], "label_sets": label_sets(colour)},
        }
    )
    return Library(settings, writer=True)


def populate(library: Library, records: int, dim: int) -> None:
    """Catalog rows, cached vectors and Chroma records, as an index run would leave them."""
    rng = np.random.default_rng(0)
    root = "/photos"
    for start in range(0, records, 5000):
        rows, vectors = [], {}
        for number in range(start, min(records, start + 5000)):
            rel, key = f"IMG_{number:06d}.jpg", f"{number:040x}"
            rows.append(
                FileRow(record_id(root, rel), root, rel, f"{root}/{rel}", 1, 1, key, INDEXED)
            )
            vector = rng.standard_normal(dim).astype(np.float32)
            vectors[key] = vector / np.linalg.norm(vector)
        library.catalog.save(rows, library.model_key, vectors)
        library.publish(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixseek-bench-retag-") as folder:
        base = Path(folder)
        model = build_random_clip(base / "model")
        library = open_library(base, model, "red")
        started = time.perf_counter()
        populate(library, args.records, library.embedder.dim)
        print(f"built {args.records:,} records in {time.perf_counter() - started:.1f} s")
        first = sync_tags(library)
        print(f"first tagging: {first.tagged:,} of {first.scored:,} embeddings tagged")
        library.close()

        library = open_library(base, model, "blue")
        Tagger(library)  # load the model and embed the label prompts outside the timings
        started = time.perf_counter()
        for hashes, vectors in library.catalog.embedding_batches(library.model_key, 4096):
            Tagger(library).tags(hashes, vectors)
        scoring = time.perf_counter() - started
        started = time.perf_counter()
        report = sync_tags(library)
        total = time.perf_counter() - started
        started = time.perf_counter()
        again = sync_tags(library)
        unchanged = time.perf_counter() - started
        library.close()
    print(
        f"scoring alone: {scoring:.2f} s ({args.records / scoring:,.0f} embeddings/s)\n"
        f"sync_tags after changing the set: {total:.2f} s for {report.scored:,} scored, "
        f"{report.changed:,} records rewritten ({args.records / total:,.0f} embeddings/s)\n"
        f"sync_tags with nothing changed: {unchanged * 1000:.1f} ms (scored {again.scored})"
    )


if __name__ == "__main__":
    main()
