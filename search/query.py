"""Text → image and image → image queries, with pagination and an optional minimum score."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixseek.catalog import INDEXED
from pixseek.imaging import ImageError, open_image
from pixseek.library import Library
from pixseek.store import Metadata


class QueryError(ValueError):
    """A query that cannot be answered as asked (bad target, empty text)."""


@dataclass
class Result:
    """One ranked image: record id, path, cosine similarity and the stored metadata."""

    id: str
    path: str
    score: float
    metadata: Metadata = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """The `{"id", "path", "score"}` shape of --json output."""
        return {"id": self.id, "path": self.path, "score": round(self.score, 6)}


def search_text(
    library: Library, text: str, k: int = 10, offset: int = 0, min_score: float | None = None
) -> list[Result]:
    """Images best matching a text, best first."""
    if not text.strip():
        raise QueryError("the query text is empty")
    vector = library.embedder.encode_texts([text])[0]
    return search_vector(library, vector, k, offset, min_score)


def similar(
    library: Library, target: str, k: int = 10, offset: int = 0, min_score: float | None = None
) -> list[Result]:
    """Images most like `target`: a record id, or an image path (indexed or not).

    An indexed target is looked up in the embedding cache (no model run) and left out of its
    own results.
    """
    vector, own_id = image_vector(library, target)
    return search_vector(library, vector, k, offset, min_score, exclude=own_id)


def image_vector(library: Library, target: str) -> tuple[np.ndarray, str | None]:
    """The embedding of a record id or image path, and the record id when it is indexed."""
    row = library.catalog.get(target)
    if row is None and os.path.exists(target):
        row = library.catalog.by_path(os.path.abspath(target))
    if (
        row is not None
        and row.status == INDEXED
        and library.catalog.cached_hashes(library.model_key, [row.content_hash or ""])
    ):
        return library.catalog.vectors(library.model_key, [row.content_hash])[0], row.id
    if not os.path.isfile(target):
        raise QueryError(f"{target!r} is neither an indexed record id nor an image file")
    try:
        decoded = open_image(Path(target), library.limits)
    except ImageError as error:
        raise QueryError(f"cannot read {target}: {error.reason}") from None
    return library.embedder.encode_images([decoded.image])[0], None


def search_vector(
    library: Library,
    vector: np.ndarray,
    k: int = 10,
    offset: int = 0,
    min_score: float | None = None,
    exclude: str | None = None,
) -> list[Result]:
    """The page [offset, offset + k) of the ranking for a unit vector."""
    if k < 1 or offset < 0:
        raise QueryError("k must be at least 1 and offset at least 0")
    wanted = offset + k + (1 if exclude else 0)
    hits = [hit for hit in library.store.query(vector, wanted) if hit.id != exclude]
    results = [
        Result(hit.id, str(hit.metadata.get("path", "")), hit.score, hit.metadata)
        for hit in hits[offset : offset + k]
    ]
    if min_score is not None:
        results = [result for result in results if result.score >= min_score]
    return results
