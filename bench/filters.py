"""Filtered search over 100k records: the strategy pixseek picks vs Chroma's own `where`.

Builds a library of synthetic records through pixseek's own catalog and store (no model, no
images): clustered random unit vectors, with metadata spread over folders, dates, formats and
sizes, and some records flagged by a tag. Then, for each filter case, times top-10 queries
(p50/p95 in ms) three ways: the strategy pixseek chooses, each strategy forced (p50 over the
first 5 queries), and plain Chroma `where` with the same filter. Recall is checked against the
exact filtered top-10 (numpy over every vector, filtered by the generated metadata, independently
of the SQL).
Run from the repository root:

    python bench/filters.py                         # 100k records in a temporary directory
    python bench/filters.py --keep /tmp/bench-100k  # build once, reuse on later runs

Chroma upserts run at roughly 1,000 records/s on 2 cores, so building 100k takes a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixseek.catalog import FileRow, record_id
from pixseek.config import Settings
from pixseek.library import Library
from pixseek.search.filters import Filters, parse_filters
from pixseek.search.query import Page, search_vector
from pixseek.search.ranking import rank

ROOT = "/bench/photos"
MODEL = "bench/synthetic-clip"
ALBUMS, SUBFOLDERS = 10, 10
FORMATS = (("JPEG", 0.70), ("HEIF", 0.15), ("PNG", 0.08), ("WEBP", 0.05), ("GIF", 0.02))
WIDTHS = ((640, 0.05), (800, 0.05), (1600, 0.3), (3000, 0.3), (4032, 0.3))
FLAGGED_SHARE = 0.02
YEARS = (2010, 2025)
BATCH = 5_000
FORCED_QUERIES = 5  # forcing the wrong strategy can take seconds per query


@dataclass
class Case:
    """One filter: pixseek's form, Chroma's `where` form, and a numpy mask for ground truth."""

    name: str
    filters: Filters
    where: dict[str, Any] | None
    mask: Callable[[dict[str, np.ndarray]], np.ndarray]


def build(
    library: Library,
    count: int,
    dim: int,
    seed: int,
    on_batch: Callable[[int], None] = lambda done: print(f"  {done:,} records", flush=True),
) -> dict[str, np.ndarray]:
    """Insert `count` synthetic records through the catalog and the store; return their facts.

    `on_batch` is told the number of records written after every batch."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(count // 100, 1), dim)))
    facts = {
        "cluster": rng.integers(0, len(centres), count),
        "album": rng.integers(0, ALBUMS, count),
        "sub": rng.integers(0, SUBFOLDERS, count),
        "format": rng.choice([f for f, _ in FORMATS], count, p=[p for _, p in FORMATS]),
        "width": rng.choice([w for w, _ in WIDTHS], count, p=[p for _, p in WIDTHS]),
        "taken": rng.uniform(_epoch(YEARS[0]), _epoch(YEARS[1]), count),
        "flagged": rng.random(count) < FLAGGED_SHARE,
    }
    facts["height"] = facts["width"] * 3 // 4
    vectors = _unit(centres[facts["cluster"]] + 0.6 * rng.standard_normal((count, dim)) / dim**0.5)
    facts["vectors"] = vectors.astype(np.float32)
    for start in range(0, count, BATCH):
        rows = [_row(facts, index) for index in range(start, min(start + BATCH, count))]
        embeddings = {row.content_hash: facts["vectors"][int(row.content_hash, 16)] for row in rows}
        library.catalog.save(rows, library.model_key, embeddings)
        flagged = [row.content_hash for row in rows if facts["flagged"][int(row.content_hash, 16)]]
        with library.catalog.db as db:
            db.executemany(
                "INSERT INTO tags VALUES (?, ?, 'moderation', 'nsfw', 0.9, 1)",
                [(library.model_key, key) for key in flagged],
            )
        library.publish(rows)
        on_batch(start + len(rows))
    np.savez(library.settings.data_path / "facts.npz", **facts)
    return facts


def _row(facts: dict[str, np.ndarray], index: int) -> FileRow:
    album, sub = facts["album"][index], facts["sub"][index]
    extension = {"JPEG": "jpg", "HEIF": "heic"}.get(facts["format"][index], "img")
    rel_path = f"a{album}/s{sub}/{index:010d}.{extension}"
    taken = float(facts["taken"][index])
    return FileRow(
        id=record_id(ROOT, rel_path),
        root=ROOT,
        rel_path=rel_path,
        path=f"{ROOT}/{rel_path}",
        size=2_000_000,
        mtime_ns=int(taken * 1e9) + 3_600_000_000_000,
        content_hash=f"{index:040x}",
        status="indexed",
        width=int(facts["width"][index]),
        height=int(facts["height"][index]),
        format=str(facts["format"][index]),
        taken_at=taken,
    )


def _unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _epoch(year: int, month: int = 1, day: int = 1) -> float:
    import datetime as dt

    return dt.datetime(year, month, day, tzinfo=dt.timezone.utc).timestamp()


def cases() -> list[Case]:
    """Filters from broad to narrow, each expressible in Chroma's `where` as well."""
    since, until = _epoch(2016, 3, 1), _epoch(2016, 3, 6)
    return [
        Case("none", Filters(), None, lambda f: np.ones(len(f["width"]), bool)),
        Case(
            "broad: min width 1024 (~90%)",
            parse_filters(min_width=1024),
            {"width": {"$gte": 1024}},
            lambda f: f["width"] >= 1024,
        ),
        Case(
            "broad: not flagged (~98%)",
            parse_filters(flagged="hide"),
            None,
            lambda f: ~f["flagged"],
        ),
        Case(
            "medium: folder a3 (~10%)",
            parse_filters(folder=f"{ROOT}/a3"),
            {"dir": {"$in": [f"a3/s{sub}" for sub in range(SUBFOLDERS)]}},
            lambda f: f["album"] == 3,
        ),
        Case(
            "medium: PNG+WEBP, min height 1000 (~10%)",
            parse_filters(formats=["png,webp"], min_height=1000),
            {"$and": [{"format": {"$in": ["PNG", "WEBP"]}}, {"height": {"$gte": 1000}}]},
            lambda f: np.isin(f["format"], ["PNG", "WEBP"]) & (f["height"] >= 1000),
        ),
        Case(
            "crossover: GIF (~2%)",
            parse_filters(formats=["gif"]),
            {"format": "GIF"},
            lambda f: f["format"] == "GIF",
        ),
        Case(
            "crossover: folder a3/s7 (~1%)",
            parse_filters(folder="a3/s7"),
            {"dir": "a3/s7"},
            lambda f: (f["album"] == 3) & (f["sub"] == 7),
        ),
        Case(
            "narrow: folder a3/s7 + PNG (~0.08%)",
            parse_filters(folder="a3/s7", formats=["png"]),
            {"$and": [{"dir": "a3/s7"}, {"format": "PNG"}]},
            lambda f: (f["album"] == 3) & (f["sub"] == 7) & (f["format"] == "PNG"),
        ),
        Case(
            "narrow: 5 days (~0.09%)",
            parse_filters(since="2016-03-01", until="2016-03-05"),
            {"$and": [{"taken_at": {"$gte": since}}, {"taken_at": {"$lt": until}}]},
            lambda f: (f["taken"] >= since) & (f["taken"] < until),
        ),
    ]


def timed(run: Callable[[], list[str]], queries: np.ndarray) -> tuple[list[float], list[list[str]]]:
    """Milliseconds per query and the ids each returned."""
    times, answers = [], []
    for vector in queries:
        start = time.perf_counter()
        answers.append(run(vector))
        times.append((time.perf_counter() - start) * 1000)
    return times, answers


def recall(answers: list[list[str]], truths: list[list[str]]) -> float:
    """Share of the exact top-10 found, over all queries."""
    found = sum(len(set(a) & set(t)) for a, t in zip(answers, truths, strict=True))
    return found / max(sum(len(t) for t in truths), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--keep", type=Path, help="data directory to build once and reuse")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    work = options.keep or Path(tempfile.mkdtemp(prefix="pixseek-bench-filters-"))
    settings = Settings(data_dir=work, model={"name": MODEL})
    library = Library(settings, writer=True)
    facts_file = work / "facts.npz"
    if facts_file.exists() and library.store.count() == options.records:
        facts = dict(np.load(facts_file))
        print(f"reusing {options.records:,} records in {work}")
    else:
        print(f"building {options.records:,} records in {work}")
        started = time.perf_counter()
        facts = build(library, options.records, options.dim, options.seed)
        print(f"built in {time.perf_counter() - started:.0f} s")
    ids = np.array([_row(facts, i).id for i in range(options.records)])
    rng = np.random.default_rng(options.seed + 1)
    picks = rng.integers(0, len(facts["vectors"]), options.queries)
    noise = 0.3 * rng.standard_normal((options.queries, options.dim)) / options.dim**0.5
    queries = _unit(facts["vectors"][picks] + noise).astype(np.float32)
    page = Page(k=10)
    header = f"{'filter':42} {'share':>7} {'chosen':>9} {'p50':>6} {'p95':>6} {'recall':>6} | "
    header += f"{'exact p50':>9} {'overfetch p50':>13} | {'where p50':>9} {'p95':>6} {'recall':>6}"
    print(header)
    for case in cases():
        mask = case.mask(facts)
        truths = [list(ids[mask][np.argsort(-(facts["vectors"][mask] @ q))[:10]]) for q in queries]
        chosen = rank(library, queries[0], 10, case.filters).strategy

        def pixseek(vector: np.ndarray, filters: Filters = case.filters) -> list[str]:
            return [result.id for result in search_vector(library, vector, page, filters)]

        times, answers = timed(pixseek, queries)
        forced = {}
        for strategy in ("exact", "overfetch"):
            forced[strategy] = timed(
                lambda v, s=strategy, f=case.filters: [
                    i for i, _ in rank(library, v, 10, f, force=s).hits
                ],
                queries[:FORCED_QUERIES],
            )[0]
        line = (
            f"{case.name:42} {mask.mean():7.2%} {chosen:>9} {_p(times, 50):6.1f} "
            f"{_p(times, 95):6.1f} {recall(answers, truths):6.3f} | "
            f"{_p(forced['exact'], 50):9.1f} {_p(forced['overfetch'], 50):13.1f} | "
        )
        if case.where is not None or not case.filters.active:
            where_times, where_answers = timed(
                lambda v, w=case.where: [h.id for h in library.store.query(v, 10, where=w)],
                queries,
            )
            line += f"{_p(where_times, 50):9.1f} {_p(where_times, 95):6.1f} "
            line += f"{recall(where_answers, truths):6.3f}"
        else:
            line += f"{'n/a':>9}"
        print(line, flush=True)
    library.close()
    if not options.keep:
        shutil.rmtree(work, ignore_errors=True)


def _p(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100)[percent - 1] if len(values) > 1 else values[0]


if __name__ == "__main__":
    main()
