"""Dedup at scale: time per tier and precision/recall of planted duplicate groups.

Synthetic records (no images, no model) are written through pixseek's own layers: rows and
embeddings with `Catalog.save`, perceptual hashes with `Catalog.save_phashes`, Chroma through
`Library.publish`. Planted groups:

- exact: files sharing one content hash (2-3 files);
- near: 2-3 contents whose pHashes are 1..`dedup.near_hamming` bits from a base, with
  vectors close to the base too (a recompressed copy looks the same to CLIP);
- semantic: 2-4 contents with vectors at cosine ~0.97 to a base and unrelated pHashes (crops);
- everything else: distinct random vectors and hashes.

Precision and recall are over pairs of files: a pair is predicted when both files are in one
reported group. The semantic tier is expected to group the near-exact sets as well. The store
comparison times Chroma `query` with many query embeddings per call against the exact blocked
matrix product that pixseek uses, and measures the kNN search's recall of the exact pairs.

    python bench/dedup.py                       # 100,000 records in ./bench-dedup
    python bench/dedup.py --records 20000 --knn-queries 2000 --sweep
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from pixseek.catalog import INDEXED, FileRow, record_id
from pixseek.config import Settings
from pixseek.library import Library
from pixseek.search.dedup import Finder
from pixseek.search.pairs import semantic_pairs

DIM = 512
MODEL = "bench/synthetic-clip-512"
ROOT = "/bench/photos"
CHUNK = 5000


def relative_path(index: int) -> str:
    """Where synthetic file number `index` lives under the root."""
    return f"{index // 1000:03d}/img_{index:06d}.jpg"


def planted(records: int, near_bits: int, seed: int = 0):
    """Content hash, vector and pHash per file, and the planted groups per tier (file indices)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((records, DIM)).astype(np.float32)
    phashes = rng.integers(-(2**63), 2**63 - 1, size=records, dtype=np.int64)
    contents = np.arange(records)
    truth: dict[str, list[list[int]]] = {"exact": [], "near": [], "semantic": []}
    groups = records // 50  # each kind plants about 2% of the records in groups
    cursor = 0
    for kind in ("exact", "near", "semantic"):
        for _ in range(groups):
            size = int(rng.integers(2, 4 if kind != "semantic" else 5))
            members = list(range(cursor, cursor + size))
            cursor += size
            base = members[0]
            for other in members[1:]:
                if kind == "exact":
                    contents[other] = contents[base]
                    vectors[other], phashes[other] = vectors[base], phashes[base]
                    continue
                noise = 0.1 if kind == "near" else 0.25
                vectors[other] = vectors[base] / np.linalg.norm(vectors[base]) * np.sqrt(DIM)
                vectors[other] += rng.standard_normal(DIM).astype(np.float32) * noise
                if kind == "near":
                    flips = rng.choice(64, size=int(rng.integers(1, near_bits + 1)), replace=False)
                    mask = sum(1 << int(bit) for bit in flips)
                    phashes[other] = phashes[base] ^ np.int64(mask - (1 << 64) * (mask >> 63))
            truth[kind].append(members)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    truth["semantic"] = truth["semantic"] + truth["near"]
    return contents, vectors, phashes, truth


def fill(library: Library, contents, vectors, phashes) -> float:
    """Write every record through the catalog and the store; returns seconds taken."""
    started = time.perf_counter()
    for start in range(0, len(contents), CHUNK):
        stop = min(start + CHUNK, len(contents))
        rows, embeddings, hashes = [], {}, {}
        for index in range(start, stop):
            key = f"{contents[index]:040x}"
            rel = relative_path(index)
            rows.append(
                FileRow(
                    id=record_id(ROOT, rel),
                    root=ROOT,
                    rel_path=rel,
                    path=f"{ROOT}/{rel}",
                    size=100_000 + index,
                    mtime_ns=1_600_000_000 * 10**9 + index,
                    content_hash=key,
                    status=INDEXED,
                    width=4000,
                    height=3000,
                    format="JPEG",
                )
            )
            embeddings[key], hashes[key] = vectors[index], int(phashes[index])
        library.catalog.save(rows, library.model_key, embeddings)
        library.catalog.save_phashes(hashes)
        library.publish(rows)
        print(f"  inserted {stop:,} records", flush=True)
    return time.perf_counter() - started


def file_pairs(groups) -> set[tuple[int, int]]:
    return {pair for group in groups for pair in itertools.combinations(sorted(group), 2)}


def index_of(path: str) -> int:
    return int(Path(path).stem.split("_")[1])


def score(found, truth) -> tuple[float, float]:
    predicted = file_pairs([[index_of(m.path) for m in g.members] for g in found])
    expected = file_pairs(truth)
    hits = len(predicted & expected)
    return hits / max(len(predicted), 1), hits / max(len(expected), 1)


def knn_pairs(library: Library, vectors: np.ndarray, queries: int, threshold: float, k: int):
    """Pairs above the threshold among the k nearest records of the first `queries` vectors."""
    found: set[tuple[int, int]] = set()
    ids = {record_id(ROOT, relative_path(i)): i for i in range(len(vectors))}
    for start in range(0, queries, 1000):
        batch = vectors[start : min(start + 1000, queries)]
        result = library.store.collection.query(
            query_embeddings=batch, n_results=k, include=["distances"]
        )
        for offset, (neighbours, distances) in enumerate(
            zip(result["ids"], result["distances"], strict=True)
        ):
            for neighbour, distance in zip(neighbours, distances, strict=True):
                other = ids[neighbour]
                if other != start + offset and 1 - distance >= threshold:
                    found.add((min(start + offset, other), max(start + offset, other)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("bench-dedup"))
    parser.add_argument("--knn-queries", type=int, default=10_000)
    parser.add_argument("--knn-k", type=int, default=10)
    parser.add_argument("--sweep", action="store_true", help="also time a semantic sweep")
    args = parser.parse_args()

    settings = Settings(data_dir=args.work / f"data-{args.records}", model={"name": MODEL})
    library = Library(settings)
    dedup = settings.dedup
    contents, vectors, phashes, truth = planted(args.records, dedup.near_hamming)
    if library.catalog.generation()[0] != args.records:
        print(f"writing {args.records:,} records through the catalog and Chroma")
        print(f"  insert: {fill(library, contents, vectors, phashes):.1f} s")

    finder = Finder(library)
    started = time.perf_counter()
    finder.groups("exact")
    print(
        f"records: {args.records:,}; catalog snapshot + exact tier: "
        f"{time.perf_counter() - started:.2f} s"
    )
    print(
        f"{'tier':<9} {'groups':>7} {'seconds':>8} {'regroup s':>9} {'precision':>9} {'recall':>7}"
    )
    for tier in ("exact", "near", "semantic"):
        started = time.perf_counter()
        found = finder.groups(tier)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        finder.groups(tier)  # cached pairs: what a page of the web UI or a decision costs
        regroup = time.perf_counter() - started
        precision, recall = score(found, truth[tier])
        print(
            f"{tier:<9} {len(found):>7,} {elapsed:>8.2f} {regroup:>9.2f} {precision:>9.4f} "
            f"{recall:>7.4f}"
        )

    if args.sweep:
        started = time.perf_counter()
        rows = finder.sweep("semantic", [0.8, 0.9, 0.95, 0.99])
        print(
            f"semantic sweep (4 thresholds): {time.perf_counter() - started:.2f} s, "
            + ", ".join(f"{r.threshold}: {r.groups} groups" for r in rows)
        )

    queries = min(args.knn_queries, args.records)
    threshold = dedup.semantic_threshold
    started = time.perf_counter()
    block = semantic_pairs(vectors, threshold)
    matmul_s = time.perf_counter() - started
    started = time.perf_counter()
    knn = knn_pairs(library, vectors, queries, threshold, args.knn_k)
    knn_s = time.perf_counter() - started
    wanted = {  # exact pairs with an end among the queried records
        (int(a), int(b)) for a, b in zip(block.left, block.right, strict=True) if a < queries
    }
    recall = len(knn & wanted) / max(len(wanted), 1)
    per_query_ms = knn_s / queries * 1000
    print(
        f"semantic pairs over all {args.records:,}: blocked matmul {matmul_s:.1f} s; Chroma "
        f"query k={args.knn_k}: {per_query_ms:.2f} ms/query over {queries:,} queries -> "
        f"{per_query_ms * args.records / 1000:.1f} s for all (x"
        f"{per_query_ms * args.records / 1000 / matmul_s:.2f} of matmul), "
        f"recall of exact pairs {recall:.4f}"
    )
    library.close()


if __name__ == "__main__":
    main()
