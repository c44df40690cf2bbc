"""Zero-shot classification: how likely each of a few labels is, for images.

Images are image files, indexed record ids (their vectors come from the embedding cache) or
the results of a text search. Labels are scored with the prompt ensemble of
`classify.templates` and a softmax (see `pixseek.zeroshot`), so the probabilities of one image
sum to 1 over the labels given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pixseek.catalog import INDEXED
from pixseek.library import Library
from pixseek.search.query import Page, QueryError, image_vector, search
from pixseek.zeroshot import label_vectors, logit_scale, probabilities

MAX_LABELS = 100
MAX_LABEL_CHARS = 200


@dataclass
class Classification:
    """The label probabilities of one image, in the order the labels were given."""

    target: str
    id: str | None
    path: str | None
    probabilities: dict[str, float]

    @property
    def best(self) -> str:
        """The most probable label."""
        return max(self.probabilities, key=self.probabilities.__getitem__)

    def as_dict(self) -> dict[str, object]:
        """The --json and API shape."""
        return {
            "target": self.target,
            "id": self.id,
            "path": self.path,
            "best": self.best,
            "probabilities": self.probabilities,
        }


def parse_labels(text: str) -> list[str]:
    """Labels from a comma-separated list, checked by `check_labels`."""
    return check_labels(text.split(","))


def check_labels(labels: Sequence[str]) -> list[str]:
    """Trimmed labels; QueryError unless 2 to MAX_LABELS distinct, non-empty, short labels."""
    cleaned = [label.strip() for label in labels]
    if len(cleaned) < 2:
        raise QueryError(
            "give at least two labels, separated by commas: probabilities compare the labels "
            "with each other"
        )
    if len(cleaned) > MAX_LABELS:
        raise QueryError(f"at most {MAX_LABELS} labels (got {len(cleaned)})")
    for number, label in enumerate(cleaned, start=1):
        if not label:
            raise QueryError(f"label {number} is empty")
        if len(label) > MAX_LABEL_CHARS:
            raise QueryError(f"label {number} is longer than {MAX_LABEL_CHARS} characters")
    seen: dict[str, str] = {}
    for label in cleaned:
        if label.casefold() in seen:
            raise QueryError(f"label {label!r} is given twice (as {seen[label.casefold()]!r})")
        seen[label.casefold()] = label
    return cleaned


def classify_vectors(library: Library, labels: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """Probabilities [n images, m labels] for unit image vectors."""
    embedder = library.embedder
    matrix = label_vectors(embedder, library.settings.classify.templates, labels)
    return probabilities(vectors, matrix, logit_scale(embedder))


def _classifications(
    library: Library,
    labels: Sequence[str],
    found: Sequence[tuple[str, str | None, str | None, np.ndarray]],
) -> list[Classification]:
    if not found:
        return []
    scores = classify_vectors(library, labels, np.stack([vector for *_, vector in found]))
    return [
        Classification(target, record, path, dict(zip(labels, map(_rounded, row), strict=True)))
        for (target, record, path, _), row in zip(found, scores, strict=True)
    ]


def _rounded(value: float) -> float:
    return round(float(value), 6)


def classify_images(
    library: Library, labels: Sequence[str], targets: Sequence[str]
) -> list[Classification]:
    """Classify image paths (indexed or not) and record ids."""
    found = []
    for target in targets:
        vector, record = image_vector(library, target)
        row = library.catalog.get(record) if record else None
        found.append((target, record, row.path if row else os.path.abspath(target), vector))
    return _classifications(library, labels, found)


def classify_records(
    library: Library, labels: Sequence[str], ids: Sequence[str]
) -> list[Classification]:
    """Classify indexed records by id, from the embedding cache (no image is decoded)."""
    rows = [library.catalog.get(record) for record in ids]
    cached = library.catalog.cached_hashes(
        library.model_key, (row.content_hash for row in rows if row and row.content_hash)
    )
    for record, row in zip(ids, rows, strict=True):
        if row is None or row.status != INDEXED or row.content_hash not in cached:
            raise QueryError(f"no indexed image with id {record!r}")
    vectors = library.catalog.vectors(library.model_key, [row.content_hash for row in rows])
    found = [(row.id, row.id, row.path, vector) for row, vector in zip(rows, vectors, strict=True)]
    return _classifications(library, labels, found)


def classify_search(
    library: Library, labels: Sequence[str], text: str, k: int
) -> list[Classification]:
    """Classify the k images that best match a text, in ranking order."""
    results = search(library, text, Page(k=k))
    return classify_records(library, labels, [result.id for result in results])


def classify_embedding(
    library: Library, labels: Sequence[str], target: str, vector: np.ndarray
) -> Classification:
    """Classify one image already embedded (an upload)."""
    return _classifications(library, labels, [(target, None, None, vector)])[0]
