"""Export benchmark: peak memory and time of `pixseek export` against loading everything first.

Builds a catalog of N synthetic indexed records (512-d float32 embeddings, a tag on one in ten)
without a model or Chroma, then, each in a fresh subprocess so peak RSS is measured alone:

- baseline: import everything and open the catalog (the floor every export pays);
- streaming: `search.export.export` in Parquet and in .npz;
- load-all: read every row and vector into memory, then `np.savez` (what streaming avoids).

Prints peak RSS above the baseline next to the size of the embeddings. Run from the repository
root: `python bench/export.py` (100,000 records) or `python bench/export.py --records 20000`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 512
MODEL = "bench/synthetic-512"


def build_catalog(path: Path, records: int) -> None:
    """Indexed rows with cached embeddings and some tags, written straight to the catalog."""
    from pixseek.catalog import INDEXED, Catalog, FileRow, record_id
    from pixseek.tags import Tag, TagTable

    catalog = Catalog(path)
    rng = np.random.default_rng(0)
    root = "/photos/library"
    for start in range(0, records, 10_000):
        rows, vectors, tags = [], {}, {}
        for number in range(start, min(records, start + 10_000)):
            rel = f"{number // 1000:03d}/IMG_{number:06d}.jpg"
            key = f"{number:040x}"
            rows.append(
                FileRow(
                    record_id(root, rel), root, rel, f"{root}/{rel}", 2_000_000 + number,
                    1_700_000_000_000_000_000 + number, key, INDEXED, width=4000, height=3000,
                    format="JPEG", taken_at=1.7e9 + number, camera="Bench Camera",
                )
            )  # fmt: skip
            vector = rng.standard_normal(DIM).astype(np.float32)
            vectors[key] = vector / np.linalg.norm(vector)
            if number % 10 == 0:
                tags[key] = [Tag("moderation", "gore", 0.9, True)]
        catalog.save(rows, MODEL, vectors)
        TagTable(catalog).replace(MODEL, tags)
    catalog.close()


def measure(mode: str, catalog_path: Path, out: Path) -> dict[str, float]:
    """Run one mode in a fresh interpreter; returns its wall time and peak RSS in MB."""
    code = f"""
import resource, time, json, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from export import run
started = time.perf_counter()
run({mode!r}, Path({str(catalog_path)!r}), Path({str(out)!r}))
print(json.dumps({{"seconds": time.perf_counter() - started,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(mode: str, catalog_path: Path, out: Path) -> None:
    """One measured mode (called in the subprocess)."""
    import pyarrow.parquet  # noqa: F401  (every mode pays the same imports)

    from pixseek.catalog import Catalog
    from pixseek.search.export import export

    catalog = Catalog(catalog_path)
    if mode in ("parquet", "npz"):
        export(catalog, MODEL, out, mode)
    elif mode == "load-all":
        rows, vectors = [], []
        for batch_rows, batch_vectors in catalog.indexed_batches(MODEL, 10_000):
            rows += batch_rows
            vectors.append(batch_vectors)
        np.savez(out, id=np.array([r.id for r in rows]), path=np.array([r.path for r in rows]),
                 embeddings=np.concatenate(vectors))  # fmt: skip
    catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixseek-bench-export-") as folder:
        base = Path(folder)
        started = time.perf_counter()
        build_catalog(base / "catalog.sqlite3", args.records)
        print(f"built {args.records:,} records in {time.perf_counter() - started:.1f} s")
        embeddings_mb = args.records * DIM * 4 / 2**20
        print(f"embeddings alone: {embeddings_mb:.0f} MB")
        floor = measure("baseline", base / "catalog.sqlite3", base / "none")
        print(f"baseline (imports, open catalog): peak {floor['peak_mb']:.0f} MB")
        for mode, name in (("parquet", "out.parquet"), ("npz", "out.npz"), ("load-all", "all.npz")):
            result = measure(mode, base / "catalog.sqlite3", base / name)
            extra = result["peak_mb"] - floor["peak_mb"]
            size = (base / name).stat().st_size / 2**20
            print(
                f"{mode:9s} {result['seconds']:6.1f} s  {args.records / result['seconds']:8,.0f} "
                f"records/s  peak +{extra:5.0f} MB over baseline = {extra / embeddings_mb:.2f}x "
                f"the embeddings  file {size:.0f} MB"
            )


if __name__ == "__main__":
    main()
