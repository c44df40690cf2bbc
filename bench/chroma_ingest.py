"""Chroma ingestion settings: write rate against recall@10, through pixseek's own store layer.

Inserts N clustered unit 512-d vectors with pixseek-like metadata into a fresh embedded collection
per HNSW setting (batches of the client's maximum size), then measures recall@10 of 500 queries
(stored vectors with noise) against exact brute force. Speed is never bought with silent recall
loss: the table shows both.

    python bench/chroma_ingest.py [--count 20000] [--workdir bench/out/chroma_ingest]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from pixseek.config import HnswSettings, StoreSettings
from pixseek.store import Store

LEAN = ("path", "mtime")
SETTINGS = {
    "default": {},
    "default, 2 metadata fields": {"lean": True},
    "default, add() not upsert()": {"add": True},
    "batch 5000, sync 50000": {"batch_size": 5000, "sync_threshold": 50000},
    "ef_c 64, batch 5000, sync 50000": {
        "construction_ef": 64,
        "batch_size": 5000,
        "sync_threshold": 50000,
    },
    "threads 16, batch 5000, sync 50000": {
        "num_threads": 16,
        "batch_size": 5000,
        "sync_threshold": 50000,
    },
    "ef_c 40, M 12, batch 5000, sync 50000": {
        "construction_ef": 40,
        "m": 12,
        "batch_size": 5000,
        "sync_threshold": 50000,
    },
}


def vectors(count: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors (like photo embeddings: groups of similar images)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(count // 50, 1), dim))
    data = centres[rng.integers(0, len(centres), count)] + 0.6 * rng.normal(size=(count, dim))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def metadata(index: int) -> dict[str, str | int | float]:
    """Lean record metadata, as pixseek stores it."""
    return {
        "path": f"/photos/{index // 1000:03d}/img_{index:07d}.jpg",
        "dir": f"{index // 1000:03d}",
        "size": 50_000 + index,
        "mtime": 1.7e9 + index,
        "width": 640,
        "height": 480,
        "format": "JPEG",
    }


def ingest(store: Store, data: np.ndarray, lean: bool = False, add: bool = False) -> float:
    """Insert everything; return vectors per second."""
    started = time.perf_counter()
    ids = [f"r{index}" for index in range(len(data))]
    metas = [metadata(index) for index in range(len(data))]
    if lean:
        metas = [{key: meta[key] for key in LEAN} for meta in metas]
    step = store.batch_size
    for start in range(0, len(data), step):
        stop = start + step
        if add:
            store.collection.add(ids=ids[start:stop], embeddings=data[start:stop],
                                 metadatas=metas[start:stop])  # fmt: skip
        else:
            store.upsert(ids[start:stop], data[start:stop], metas[start:stop])
    return len(data) / (time.perf_counter() - started)


def recall_at_10(store: Store, data: np.ndarray, queries: int = 500) -> tuple[float, float]:
    """Mean recall@10 against exact search, and the median query time in ms."""
    rng = np.random.default_rng(1)
    picks = rng.choice(len(data), size=min(queries, len(data)), replace=False)
    noisy = data[picks] + 0.05 * rng.normal(size=(len(picks), data.shape[1])).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    exact = np.argsort(-(noisy @ data.T), axis=1)[:, :10]
    hits, times = 0, []
    for query, truth in zip(noisy, exact, strict=True):
        started = time.perf_counter()
        found = {int(hit.id[1:]) for hit in store.query(query, 10)}
        times.append(time.perf_counter() - started)
        hits += len(found & set(truth.tolist()))
    return hits / (10 * len(picks)), 1000 * float(np.median(times))


def run(count: int, workdir: Path) -> list[dict[str, object]]:
    """Measure every setting; returns rows of the table."""
    data = vectors(count)
    rows = []
    for number, (name, overrides) in enumerate(SETTINGS.items()):
        path = workdir / f"chroma-{number}"  # one client per path and process: never reuse
        shutil.rmtree(path, ignore_errors=True)
        hnsw = {key: value for key, value in overrides.items() if key not in ("lean", "add")}
        store = Store(StoreSettings(hnsw=HnswSettings(**hnsw)), path, "bench")
        rate = ingest(store, data, overrides.get("lean", False), overrides.get("add", False))
        recall, query_ms = recall_at_10(store, data)
        rows.append(
            {"setting": name, "hnsw": overrides, "vectors_per_s": round(rate),
             "recall_at_10": round(recall, 4), "query_p50_ms": round(query_ms, 2)}
        )  # fmt: skip
        print(f"{name:<40} {rate:10,.0f}/s  recall@10 {recall:.4f}  query p50 {query_ms:.2f} ms")
    return rows


def main() -> None:
    """Print the table and write it as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/chroma_ingest"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"{args.count} vectors, 512-d, 7 metadata fields, embedded Chroma")
    rows = run(args.count, args.workdir)
    (args.workdir / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
