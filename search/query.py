"""Queries: combined text/image queries and similar-by-image, filtered, cut off, paged, sorted."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pixseek.catalog import INDEXED, FileRow
from pixseek.imaging import ImageError, open_image
from pixseek.library import Library
from pixseek.search.combined import QueryError, Term, parse
from pixseek.search.filters import NO_FILTERS, Filters
from pixseek.search.ranking import rank
from pixseek.store import Metadata

__all__ = ["Page", "QueryError", "Result", "image_vector", "search", "search_vector", "similar"]

Sort = Literal["score", "date"]
SORTS: tuple[Sort, ...] = ("score", "date")
DATE_SORT_LIMIT = 1000
"""Sorting by date orders at most this many best matches (those above the minimum score)."""


@dataclass(frozen=True)
class Page:
    """Which results to return: page size and offset, minimum score, and order."""

    k: int = 10
    offset: int = 0
    min_score: float | None = None
    sort: Sort = "score"


@dataclass
class Result:
    """One ranked image: record id, path, cosine similarity, date and the stored metadata."""

    id: str
    path: str
    score: float
    metadata: Metadata = field(default_factory=dict)

    @property
    def date(self) -> float | None:
        """When the photo was taken (EXIF), else when the file was last modified."""
        taken, mtime = self.metadata.get("taken_at"), self.metadata.get("mtime_ns")
        if isinstance(taken, (int, float)):
            return float(taken)
        return mtime / 1e9 if isinstance(mtime, (int, float)) else None

    def as_dict(self) -> dict[str, object]:
        """The `{"id", "path", "score", "date"}` shape of --json output (date: epoch seconds)."""
        return {"id": self.id, "path": self.path, "score": round(self.score, 6), "date": self.date}


def search(
    library: Library,
    query: str,
    page: Page = Page(),
    filters: Filters = NO_FILTERS,
    uploads: Sequence[np.ndarray] = (),
    read_files: bool = True,
) -> list[Result]:
    """Images best matching a query (see `pixseek.search.combined`) plus any uploaded images.

    Images named in the query are left out of the results. With `read_files` false (the web),
    image paths must be indexed records: nothing else on disk is read.
    """
    terms = parse(query) if query.strip() or not uploads else []
    vector, named = combine(library, terms, uploads, read_files)
    return search_vector(library, vector, page, filters, exclude=named)


def similar(
    library: Library, target: str, page: Page = Page(), filters: Filters = NO_FILTERS
) -> list[Result]:
    """Images most like `target`: a record id, or an image path (indexed or not).

    An indexed target is looked up in the embedding cache (no model run) and left out of its
    own results.
    """
    vector, record = image_vector(library, target)
    return search_vector(library, vector, page, filters, exclude={record} if record else set())


def image_vector(library: Library, target: str) -> tuple[np.ndarray, str | None]:
    """The embedding of a record id or image path, and the record id when it is indexed (then
    from the embedding cache, without running the model)."""
    row = library.catalog.get(target)
    if row is None and os.path.exists(target):
        row = library.catalog.by_path(os.path.abspath(target))
    cached = _cached_vector(library, row)
    if cached is not None:
        return cached, row.id  # type: ignore[union-attr]
    if not os.path.isfile(target):
        raise QueryError(f"{target!r} is neither an indexed record id nor an image file")
    return _embed_file(library, target, target), None


def combine(
    library: Library, terms: list[Term], uploads: Sequence[np.ndarray], read_files: bool
) -> tuple[np.ndarray, set[str]]:
    """The weighted sum of the terms' unit vectors and the uploads, renormalised.

    Returns the vector and the record ids of indexed images named in the query.
    """
    if not uploads and all(term.sign < 0 for term in terms):
        raise QueryError("a query needs a term to add, not only terms to subtract")
    texts = [term for term in terms if term.kind == "text"]
    encoded = library.embedder.encode_texts([term.value for term in texts]) if texts else []
    text_vectors = dict(zip(texts, encoded, strict=True))
    total = np.sum(uploads, axis=0) if uploads else 0.0
    named: set[str] = set()
    for term in terms:
        if term.kind == "text":
            vector = text_vectors[term]
        else:
            vector, record = _image_term(library, term, read_files)
            named.update([record] if record else [])
        total = total + term.sign * term.weight * np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise QueryError("the terms cancel out: nothing is left to search for")
    return (total / norm).astype(np.float32), named


def _image_term(library: Library, term: Term, read_files: bool) -> tuple[np.ndarray, str | None]:
    if term.kind == "record":
        row = library.catalog.get(term.value)
        cached = _cached_vector(library, row)
        if cached is None:
            raise QueryError(f"{term.where()}: no indexed image has this id")
        return cached, term.value
    path = os.path.abspath(os.path.expanduser(term.value))
    row = library.catalog.by_path(path)
    cached = _cached_vector(library, row)
    if cached is not None:
        return cached, row.id  # type: ignore[union-attr]
    if not read_files:
        raise QueryError(
            f"{term.where()}: not an indexed image; only indexed files are read here, "
            "so upload it instead"
        )
    if not os.path.isfile(path):
        raise QueryError(f"{term.where()}: no such image file")
    return _embed_file(library, path, term.where()), None


def _cached_vector(library: Library, row: FileRow | None) -> np.ndarray | None:
    if row is None or row.status != INDEXED or not row.content_hash:
        return None
    if not library.catalog.cached_hashes(library.model_key, [row.content_hash]):
        return None
    return library.catalog.vectors(library.model_key, [row.content_hash])[0]


def _embed_file(library: Library, path: str, name: str) -> np.ndarray:
    try:
        decoded = open_image(Path(path), library.limits)
    except ImageError as error:
        raise QueryError(f"cannot read {name}: {error.reason}") from None
    return library.embedder.encode_images([decoded.image])[0]


def search_vector(
    library: Library,
    vector: np.ndarray,
    page: Page = Page(),
    filters: Filters = NO_FILTERS,
    exclude: Collection[str] = (),
) -> list[Result]:
    """The page of the ranking for a unit vector, under filters and the minimum score."""
    if page.k < 1 or page.offset < 0:
        raise QueryError("k must be at least 1 and offset at least 0")
    by_date = page.sort == "date"
    wanted = DATE_SORT_LIMIT if by_date else page.offset + page.k
    hits = rank(library, vector, wanted, filters, exclude, page.min_score).hits
    if not by_date:
        hits = hits[page.offset : page.offset + page.k]
    rows = library.catalog.rows([record for record, _ in hits])
    results = [
        Result(record, rows[record].path, score, rows[record].metadata(library.model_key))
        for record, score in hits
        if record in rows
    ]
    if by_date:
        results.sort(key=lambda result: result.date or 0.0, reverse=True)
        results = results[page.offset : page.offset + page.k]
    return results
