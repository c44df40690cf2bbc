"""Tags at index time, and re-tagging from the embedding cache when the label sets change.

Every label set of `classify.label_sets` is scored on each newly embedded image: its labels and
its neutral prompts compete in one softmax, and labels at or above the set's threshold become
tags. The catalog remembers a fingerprint of the label-set configuration; when it differs,
`sync_tags` scores every cached embedding again in batches (one matrix product per batch: the
image tower never runs) and updates the changed records' Chroma metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pixseek.config import ClassifySettings
from pixseek.library import Library
from pixseek.tags import Tag, TagTable, tag_metadata
from pixseek.zeroshot import label_vectors, logit_scale, probabilities

RETAG_BATCH = 4096


@dataclass
class RetagReport:
    """What `sync_tags` did: embeddings scored, records whose tags changed, embeddings tagged."""

    scored: int = 0
    changed: int = 0
    tagged: int = 0


def label_set_fingerprint(settings: ClassifySettings) -> str:
    """Identifies everything tags depend on besides the model: templates and label sets."""
    payload = {
        "templates": settings.templates,
        "label_sets": [label_set.model_dump() for label_set in settings.label_sets],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


class Tagger:
    """The configured label sets as text matrices of the library's model (text tower only)."""

    def __init__(self, library: Library) -> None:
        classify = library.settings.classify
        self.label_sets = classify.label_sets
        self.matrices: list[np.ndarray] = []
        self.scale = 1.0
        if self.label_sets:
            embedder = library.embedder
            self.scale = logit_scale(embedder)
            self.matrices = [
                label_vectors(embedder, classify.templates, [*s.labels, *s.neutral])
                for s in self.label_sets
            ]

    def tags(self, hashes: Sequence[str], vectors: np.ndarray) -> dict[str, list[Tag]]:
        """Tags for each hash (an empty list when none passes its threshold)."""
        found: dict[str, list[Tag]] = {key: [] for key in hashes}
        for label_set, matrix in zip(self.label_sets, self.matrices, strict=True):
            scores = probabilities(vectors, matrix, self.scale)[:, : len(label_set.labels)]
            for row, column in zip(*np.nonzero(scores >= label_set.threshold), strict=True):
                found[hashes[row]].append(
                    Tag(
                        label_set.name,
                        label_set.labels[column],
                        round(float(scores[row, column]), 6),
                        label_set.flag,
                    )
                )
        return found


def tag_embeddings(library: Library, embeddings: Mapping[str, np.ndarray]) -> None:
    """Store the tags of freshly embedded images, before their rows are saved and published.

    Without label sets there is nothing to store: `sync_tags` has already cleared any tags."""
    if not embeddings or not library.settings.classify.label_sets:
        return
    hashes = list(embeddings)
    tags = Tagger(library).tags(hashes, np.stack([embeddings[key] for key in hashes]))
    TagTable(library.catalog).replace(library.model_key, tags)


def sync_tags(library: Library, force: bool = False) -> RetagReport:
    """Re-tag every cached embedding when the label sets changed (or with `force`).

    Cheap when nothing changed (one catalog read). The fingerprint is stored last, so a run
    interrupted half-way is simply redone the next time.
    """
    table, model = TagTable(library.catalog), library.model_key
    fingerprint = label_set_fingerprint(library.settings.classify)
    stored = table.fingerprint(model)
    report = RetagReport()
    if stored == fingerprint and not force:
        return report
    tagger: Tagger | None = None
    for hashes, vectors in library.catalog.embedding_batches(model, RETAG_BATCH):
        tagger = tagger or Tagger(library)
        new = tagger.tags(hashes, vectors)
        old = table.for_hashes(model, hashes)
        changed = [
            key
            for key in hashes
            # records published before tags existed lack the fields: write them all once
            if stored is None or tag_metadata(old.get(key, [])) != tag_metadata(new[key])
        ]
        table.replace(model, new)
        records = library.catalog.records_with_hashes(changed)
        library.store.update_metadata(
            [record for record, _ in records], [tag_metadata(new[key]) for _, key in records]
        )
        report.scored += len(hashes)
        report.changed += len(records)
        report.tagged += sum(1 for values in new.values() if values)
    table.set_fingerprint(model, fingerprint)
    return report
