"""Ranking a query vector under filters: the strategy is chosen per query.

Chroma's own `where` is slow over large collections (bench/filters.py: hundreds of ms over 100k
records, whatever the filter), so filters are evaluated in the catalog instead:

- `hnsw`: no filter. The store's nearest neighbours.
- `exact`: few records match. The catalog lists them (the query stops one row past the limit,
  so a broad filter costs little to recognise), their cached vectors are read, and numpy
  scores every one. Exact, and O(matches).
- `overfetch`: many records match. Nearest neighbours are fetched without the filter and
  checked against the catalog: a small fetch first, then one sized by the share that passed.
  If the fetch would pass `MAX_FETCH` (a filter adversarial to the query), every matching
  record is scored exactly instead.

Scoring a record exactly costs about as much as fetching ~100 extra neighbours per wanted
result, so the crossover grows like sqrt(records * wanted): see `exact_limit`.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from pixseek.library import Library
from pixseek.search.filters import Filters, sql_conditions

Strategy = Literal["hnsw", "exact", "overfetch"]
MAX_FETCH = 20_000
OVERFETCH = 3.0
"""Fetch this many times the neighbours the passing share predicts: a deeper fetch also makes
HNSW search wider (its ef grows with k), which bench/filters.py shows lifts recall at 2% share
from 0.91 (1.5x) to 0.96."""
_CHUNK = 500


@dataclass
class Ranking:
    """The best records for a query, best first, and how they were found."""

    hits: list[tuple[str, float]]
    strategy: Strategy


def exact_limit(total: int, wanted: int) -> int:
    """Most matching records for which exact scoring beats over-fetching (measured, see module)."""
    return max(500, int(math.sqrt(3 * total * max(wanted, 1))))


def rank(
    library: Library,
    vector: np.ndarray,
    wanted: int,
    filters: Filters,
    exclude: Collection[str] = (),
    min_score: float | None = None,
    force: Strategy | None = None,
) -> Ranking:
    """The `wanted` best records passing `filters`, best first, none below `min_score`."""
    filters = _without_idle_flag_filter(library, filters)
    if force == "hnsw" or (force is None and not filters.active):
        hits = library.store.query(vector, wanted + len(exclude), with_metadata=False)
        ranked = [(hit.id, hit.score) for hit in hits if hit.id not in exclude]
        return Ranking(_cut(ranked, wanted, min_score), "hnsw")
    condition, args = sql_conditions(filters, library.model_key)
    total = _record_count(library)
    limit = {"exact": total, "overfetch": 0}.get(force or "", exact_limit(total, wanted))
    matches = library.catalog.db.execute(
        f"SELECT f.id, f.content_hash FROM files f WHERE {condition} LIMIT ?", [*args, limit + 1]
    ).fetchall()
    if len(matches) <= limit:
        return Ranking(_cut(_exact(library, vector, matches, exclude), wanted, min_score), "exact")
    share = max(limit, 1) / max(total, 1)
    ranked = _overfetch(library, vector, wanted, share, condition, args, exclude, min_score)
    if ranked is None:
        everything = library.catalog.db.execute(
            f"SELECT f.id, f.content_hash FROM files f WHERE {condition}", args
        ).fetchall()
        return Ranking(
            _cut(_exact(library, vector, everything, exclude), wanted, min_score), "exact"
        )
    return Ranking(_cut(ranked, wanted, min_score), "overfetch")


def _record_count(library: Library) -> int:
    """Files in the catalog: an upper bound on records, and much cheaper than asking Chroma."""
    return library.catalog.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]


def _without_idle_flag_filter(library: Library, filters: Filters) -> Filters:
    """Hiding flagged images when none is flagged restricts nothing: skip the filter."""
    if filters.flagged != "hide":
        return filters
    flagged = library.catalog.db.execute(
        "SELECT 1 FROM tags WHERE model = ? AND flag = 1 LIMIT 1", (library.model_key,)
    ).fetchone()
    if flagged:
        return filters
    return replace(filters, flagged="any")


def _cut(
    ranked: list[tuple[str, float]], wanted: int, min_score: float | None
) -> list[tuple[str, float]]:
    kept = ranked[:wanted]
    if min_score is None:
        return kept
    return [(record, score) for record, score in kept if score >= min_score]


def _exact(
    library: Library,
    vector: np.ndarray,
    matches: Sequence[tuple[str, str]],
    exclude: Collection[str],
) -> list[tuple[str, float]]:
    """Every (id, content hash) scored against its cached vector, best first."""
    kept = [(record, key) for record, key in matches if record not in exclude]
    if not kept:
        return []
    matrix = library.catalog.vectors(library.model_key, [key for _, key in kept])
    scores = matrix @ np.asarray(vector, dtype=np.float32)
    order = np.argsort(-scores, kind="stable")
    return [(kept[index][0], float(scores[index])) for index in order]


def _overfetch(
    library: Library,
    vector: np.ndarray,
    wanted: int,
    least_share: float,
    condition: str,
    args: list[object],
    exclude: Collection[str],
    min_score: float | None,
) -> list[tuple[str, float]] | None:
    """Unfiltered neighbours checked against the filter; None when the fetch grows too large.

    `least_share` is a lower bound on the share of records that pass.
    """
    total = _record_count(library)
    needed = wanted + len(exclude)
    fetch = min(2 * needed + 16, total)
    while True:
        hits = library.store.query(vector, fetch, with_metadata=False)
        passing = _passing(library.catalog.db, [hit.id for hit in hits], condition, args)
        ranked = [
            (hit.id, hit.score) for hit in hits if hit.id in passing and hit.id not in exclude
        ]
        exhausted = len(hits) < fetch or fetch >= total
        below_cutoff = min_score is not None and bool(hits) and hits[-1].score < min_score
        if len(ranked) >= wanted or exhausted or below_cutoff:
            return ranked
        share = max(len(passing) / max(len(hits), 1), least_share)
        next_fetch = max(int(needed / share * OVERFETCH) + 16, fetch * 2)
        if next_fetch > MAX_FETCH:
            return None
        fetch = min(next_fetch, total)


def _passing(
    db: sqlite3.Connection, ids: Sequence[str], condition: str, args: list[object]
) -> set[str]:
    """The subset of `ids` that pass the filter."""
    passing: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        # CROSS JOIN keeps the candidates as the outer loop: one primary-key lookup each, where
        # `f.id IN (...)` may let SQLite walk a whole format index instead.
        cursor = db.execute(
            f"WITH c(id) AS (VALUES {','.join(['(?)'] * len(chunk))}) "
            f"SELECT f.id FROM c CROSS JOIN files f WHERE f.id = c.id AND {condition}",
            [*chunk, *args],
        )
        passing.update(record for (record,) in cursor)
    return passing
