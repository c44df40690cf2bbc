"""Duplicate groups in three tiers, reported apart: exact, near-exact and semantic.

- exact: files with the same content hash;
- near: distinct contents whose perceptual hashes are at most `dedup.near_hamming` bits apart
  (resized, recompressed, re-encoded copies);
- semantic: distinct contents whose CLIP embeddings have cosine at least
  `dedup.semantic_threshold` (bursts, crops, edits).

A group is a connected component of the pair graph; every file of each content in it is a
member, and one member is the suggested keeper. Pairs are cached per tier and threshold until
the catalog changes, and stored decisions silence pairs, so regrouping (a page of the web UI, a
decision, a sweep) costs a graph pass, not a new search.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field, fields

import numpy as np

from pixseek.catalog import FileRow
from pixseek.library import Library
from pixseek.phash import as_unsigned
from pixseek.search import decisions
from pixseek.search.decisions import TIERS, Tier
from pixseek.search.fingerprints import phashes
from pixseek.search.keepers import Member, choose_keeper, is_protected
from pixseek.search.pairs import (
    Pairs,
    components,
    near_pairs,
    neighbour_similarity,
    semantic_pairs,
)

# Looser than this, nearly every pair of a large library matches: slow and meaningless.
MAX_NEAR_BITS = 16
MIN_SEMANTIC = 0.5


class DedupError(ValueError):
    """A dedup request that cannot be answered as asked (bad tier or threshold)."""


@dataclass
class Group:
    """A set of duplicate files. `score`: the largest pHash distance of its pairs (near), the
    lowest cosine of its pairs (semantic), or 0 (exact)."""

    id: str
    tier: Tier
    score: float
    members: list[Member]
    keeper: Member
    protected: frozenset[str]

    @property
    def hashes(self) -> frozenset[str]:
        """The contents in the group (what a decision about it is stored by)."""
        return frozenset(member.content_hash for member in self.members)

    @property
    def removable(self) -> list[Member]:
        """The members a quarantine would move: all but the keeper and protected files."""
        return [m for m in self.members if m.id != self.keeper.id and m.id not in self.protected]

    @property
    def reclaimable_bytes(self) -> int:
        """Bytes freed by moving the removable members away."""
        return sum(member.size for member in self.removable)

    def as_dict(self) -> dict[str, object]:
        """The JSON form shared by the CLI and the API."""
        return {
            "id": self.id,
            "tier": self.tier,
            "score": round(float(self.score), 6),
            "keeper": self.keeper.id,
            "reclaimable_bytes": self.reclaimable_bytes,
            "members": [
                {
                    "id": m.id,
                    "path": m.path,
                    "content_hash": m.content_hash,
                    "size": m.size,
                    "width": m.width,
                    "height": m.height,
                    "format": m.format,
                    "taken_at": m.taken_at,
                    "keeper": m.id == self.keeper.id,
                    "protected": m.id in self.protected,
                }
                for m in self.members
            ],
        }


@dataclass
class SweepRow:
    """What one threshold would do: groups found and files a quarantine would move."""

    threshold: float
    groups: int
    files_removed: int


@dataclass
class Outlier:
    """A record far from everything: mean cosine to its nearest neighbours (low = isolated)."""

    id: str
    path: str
    similarity: float


@dataclass
class _Snapshot:
    generation: tuple[int, float]
    contents: dict[str, list[Member]]
    pairs: dict[tuple[str, float], tuple[list[str], Pairs]] = field(default_factory=dict)


def default_threshold(library: Library, tier: Tier) -> float:
    """The configured threshold of a tier (exact has none)."""
    settings = library.settings.dedup
    return {"exact": 0.0, "near": settings.near_hamming, "semantic": settings.semantic_threshold}[
        tier
    ]


def check_threshold(tier: str, threshold: float | None) -> None:
    """Refuse an unknown tier or a threshold that makes no sense for it."""
    if tier not in TIERS:
        raise DedupError(f"unknown tier {tier!r}; allowed: {', '.join(TIERS)}")
    if threshold is None:
        return
    if tier == "exact":
        raise DedupError("the exact tier has no threshold (it compares content hashes)")
    if tier == "near" and (threshold != int(threshold) or not 0 <= threshold <= MAX_NEAR_BITS):
        raise DedupError(
            f"near threshold is a number of bits from 0 to {MAX_NEAR_BITS} (got {threshold})"
        )
    if tier == "semantic" and not MIN_SEMANTIC <= threshold <= 1.0:
        raise DedupError(
            f"semantic threshold is a cosine from {MIN_SEMANTIC} to 1 (got {threshold})"
        )


class Finder:
    """Finds duplicate groups in one library; safe to share between threads."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self._lock = threading.RLock()
        self._snapshot: _Snapshot | None = None

    def groups(self, tier: Tier, threshold: float | None = None) -> list[Group]:
        """Every group of a tier that no stored decision silences, most bytes to reclaim first."""
        check_threshold(tier, threshold)
        with self._lock:
            snapshot = self._current()
            if tier == "exact":
                return self._exact_groups(snapshot)
            limit = default_threshold(self.library, tier) if threshold is None else threshold
            keys, pairs = self._pairs(snapshot, tier, limit)
            pairs = _silence(keys, pairs, decisions.silencing(self.library.catalog, tier))
            return self._graph_groups(snapshot, tier, keys, pairs)

    def find(self, tier: Tier, threshold: float | None, group_id: str) -> Group | None:
        """The current group with this id, if it is still one."""
        return next((g for g in self.groups(tier, threshold) if g.id == group_id), None)

    def sweep(self, tier: Tier, thresholds: list[float]) -> list[SweepRow]:
        """Groups and files removed at each threshold, from one search at the loosest."""
        for threshold in thresholds:
            check_threshold(tier, threshold)
        if tier == "exact" or not thresholds:
            raise DedupError("a sweep needs the near or semantic tier and at least one threshold")
        loosest = max(thresholds) if tier == "near" else min(thresholds)
        with self._lock:
            snapshot = self._current()
            keys, pairs = self._pairs(snapshot, tier, loosest)
            pairs = _silence(keys, pairs, decisions.silencing(self.library.catalog, tier))
            rows = []
            for threshold in thresholds:
                kept = _within(pairs, tier, threshold)
                labels = components(len(keys), kept)
                files = np.array([len(snapshot.contents[key]) for key in keys], dtype=np.int64)
                grouped = np.bincount(labels, minlength=len(keys))[labels] >= 2
                per_group = np.bincount(labels[grouped], weights=files[grouped])
                in_groups = per_group[per_group > 0]
                rows.append(
                    SweepRow(threshold, len(in_groups), int(in_groups.sum() - len(in_groups)))
                )
            return rows

    def outliers(self, count: int, neighbours: int = 5) -> list[Outlier]:
        """The `count` records least like their nearest neighbours (one per content)."""
        with self._lock:
            snapshot = self._current()
            keys = list(snapshot.contents)
            vectors = self.library.catalog.vectors(self.library.model_key, keys)
            similarity = neighbour_similarity(vectors, neighbours)
            order = np.argsort(similarity, kind="stable")[:count]
            return [
                Outlier(
                    snapshot.contents[keys[i]][0].id,
                    snapshot.contents[keys[i]][0].path,
                    float(similarity[i]),
                )
                for i in order
            ]

    def _current(self) -> _Snapshot:
        catalog = self.library.catalog
        generation = catalog.generation()
        if self._snapshot is None or self._snapshot.generation != generation:
            contents: dict[str, list[Member]] = defaultdict(list)
            for row in catalog.indexed(self.library.model_key):
                contents[row.content_hash or ""].append(_member(row))
            ordered = {key: sorted(contents[key], key=lambda m: m.path) for key in sorted(contents)}
            self._snapshot = _Snapshot(generation, ordered)
        return self._snapshot

    def _pairs(self, snapshot: _Snapshot, tier: Tier, threshold: float) -> tuple[list[str], Pairs]:
        for (cached_tier, cached), (keys, pairs) in snapshot.pairs.items():
            looser = cached >= threshold if tier == "near" else cached <= threshold
            if cached_tier == tier and looser:
                return keys, _within(pairs, tier, threshold)
        if tier == "near":
            known = phashes(self.library, snapshot.contents)
            keys = [key for key in snapshot.contents if key in known]
            values = as_unsigned(np.array([known[key] for key in keys], dtype=np.int64))
            found = near_pairs(values, int(threshold))
        else:
            keys = list(snapshot.contents)
            found = semantic_pairs(
                self.library.catalog.vectors(self.library.model_key, keys), threshold
            )
        snapshot.pairs[(tier, threshold)] = (keys, found)
        return keys, found

    def _exact_groups(self, snapshot: _Snapshot) -> list[Group]:
        silenced = set().union(*decisions.silencing(self.library.catalog, "exact"))
        groups = [
            self._group("exact", [key], 0.0, snapshot)
            for key, members in snapshot.contents.items()
            if len(members) >= 2 and key not in silenced
        ]
        return _ranked(groups)

    def _graph_groups(
        self, snapshot: _Snapshot, tier: Tier, keys: list[str], pairs: Pairs
    ) -> list[Group]:
        labels = components(len(keys), pairs)
        edge_labels = labels[pairs.left]
        if tier == "near":
            scores = np.zeros(len(keys))
            np.maximum.at(scores, edge_labels, pairs.score)
        else:
            scores = np.ones(len(keys))
            np.minimum.at(scores, edge_labels, pairs.score)
        sizes = np.bincount(labels, minlength=len(keys))
        grouped = np.flatnonzero(sizes[labels] >= 2)
        by_label: dict[int, list[str]] = defaultdict(list)
        for index in grouped:
            by_label[int(labels[index])].append(keys[index])
        groups = [
            self._group(tier, members, float(scores[label]), snapshot)
            for label, members in by_label.items()
        ]
        return _ranked(groups)

    def _group(self, tier: Tier, keys: list[str], score: float, snapshot: _Snapshot) -> Group:
        members = [member for key in keys for member in snapshot.contents[key]]
        settings = self.library.settings.dedup
        keeper = choose_keeper(members, settings)
        protected = frozenset(
            m.id for m in members if m.id != keeper.id and is_protected(m, settings)
        )
        digest = hashlib.sha256(f"{tier}:{','.join(sorted(keys))}".encode()).hexdigest()[:16]
        return Group(digest, tier, score, members, keeper, protected)


def _member(row: FileRow) -> Member:
    facts = {name.name: getattr(row, name.name) for name in fields(Member)}
    return Member(**facts | {"content_hash": row.content_hash or ""})


def _ranked(groups: list[Group]) -> list[Group]:
    return sorted(groups, key=lambda group: (-group.reclaimable_bytes, group.id))


def _within(pairs: Pairs, tier: Tier, threshold: float) -> Pairs:
    return pairs.where(pairs.score <= threshold if tier == "near" else pairs.score >= threshold)


def _silence(keys: list[str], pairs: Pairs, sets: list[frozenset[str]]) -> Pairs:
    """Drop pairs whose two contents were decided about together."""
    if not sets or not len(pairs):
        return pairs
    owners: dict[str, set[int]] = defaultdict(set)
    for number, hashes in enumerate(sets):
        for key in hashes:
            owners[key].add(number)
    decided = np.array([key in owners for key in keys])
    keep = np.ones(len(pairs), dtype=bool)
    for edge in np.flatnonzero(decided[pairs.left] & decided[pairs.right]):
        if owners[keys[pairs.left[edge]]] & owners[keys[pairs.right[edge]]]:
            keep[edge] = False
    return pairs.where(keep)
