"""Candidate duplicate pairs without comparing every pair in Python, and their connected groups.

Near-exact pairs use multi-index hashing: a 64-bit hash is cut into four 16-bit chunks, and two
hashes at most `d` bits apart have at least one chunk at most `d // 4` bits apart (pigeonhole), so
probing each chunk's table within that radius finds every pair, then a popcount checks the rest.
Semantic pairs come from exact matrix products over the cached unit vectors, in blocks of rows
(upper triangle only), so memory stays bounded and no pair above the threshold is missed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pixseek.phash import BITS, hamming

CHUNK_BITS = 16
CHUNKS = BITS // CHUNK_BITS
BLOCK_VALUES = 32_000_000  # similarity values computed at once (128 MB of float32)
EXPAND_LIMIT = 4_000_000  # candidate pairs expanded at once
STAR_ABOVE = 200  # items sharing one hash value beyond this are joined as a star


@dataclass
class Pairs:
    """Edges between items `left[k]` and `right[k]` (left < right) with a score each."""

    left: np.ndarray
    right: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls) -> Pairs:
        """No pairs."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))

    @classmethod
    def join(cls, parts: list[Pairs]) -> Pairs:
        """All pairs of several parts, each pair once."""
        if not parts:
            return cls.empty()
        left = np.concatenate([part.left for part in parts])
        right = np.concatenate([part.right for part in parts])
        score = np.concatenate([part.score for part in parts])
        _, first = np.unique((left << 32) | right, return_index=True)
        return cls(left[first], right[first], score[first])

    def where(self, keep: np.ndarray) -> Pairs:
        """The pairs selected by a boolean mask."""
        return Pairs(self.left[keep], self.right[keep], self.score[keep])

    def __len__(self) -> int:
        return len(self.left)


def near_pairs(hashes: np.ndarray, max_distance: int) -> Pairs:
    """Pairs of uint64 hashes at most `max_distance` bits apart; score = the distance.

    Distinct hash values are searched once each; items sharing a value then get every pair
    (a value shared by more than STAR_ABOVE items is joined as a star, enough for grouping).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    values, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    starts = np.cumsum(counts) - counts
    shared = np.flatnonzero(counts >= 2)
    parts = [_star_pairs(order, starts, counts, shared[counts[shared] > STAR_ABOVE])]
    small = shared[counts[shared] <= STAR_ABOVE]
    parts.append(_expand(small, small, np.zeros(len(small)), order, starts, counts))
    masks = _masks(max_distance // CHUNKS)
    for chunk in range(CHUNKS):
        keys = ((values >> np.uint64(chunk * CHUNK_BITS)) & np.uint64(0xFFFF)).astype(np.int64)
        by_key = np.argsort(keys, kind="stable")
        for mask in masks:
            for left, right in _equal_join(keys[by_key], keys ^ mask, by_key):
                distance = hamming(values[left], values[right])
                close = (left < right) & (distance <= max_distance)
                parts.append(
                    _expand(left[close], right[close], distance[close], order, starts, counts)
                )
    return Pairs.join(parts)


def _expand(
    left: np.ndarray,
    right: np.ndarray,
    score: np.ndarray,
    order: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
) -> Pairs:
    """Pairs of values (distinct, or a value with itself) as every pair of their items."""
    sizes = counts[left] * counts[right]
    which = np.repeat(np.arange(len(left)), sizes)
    local = np.arange(len(which)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    width = counts[right][which]
    a = order[starts[left][which] + local // width]
    b = order[starts[right][which] + local % width]
    keep = a != b
    a, b = a[keep], b[keep]
    return Pairs(np.minimum(a, b), np.maximum(a, b), score[which][keep].astype(np.float64))


def _star_pairs(
    order: np.ndarray, starts: np.ndarray, counts: np.ndarray, values: np.ndarray
) -> Pairs:
    """Each item of a crowded value joined to the value's first item."""
    if not len(values):
        return Pairs.empty()
    lefts, rights = [], []
    for value in values:
        items = order[starts[value] : starts[value] + counts[value]]
        lefts.append(np.full(len(items) - 1, items[0]))
        rights.append(items[1:])
    left, right = np.concatenate(lefts), np.concatenate(rights)
    return Pairs(np.minimum(left, right), np.maximum(left, right), np.zeros(len(left)))


def _masks(radius: int) -> list[int]:
    """Every 16-bit XOR mask with at most `radius` bits set."""
    return [
        sum(1 << bit for bit in bits)
        for count in range(min(radius, CHUNK_BITS) + 1)
        for bits in combinations(range(CHUNK_BITS), count)
    ]


def _equal_join(
    sorted_keys: np.ndarray, probes: np.ndarray, order: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(i, j) with key[j] == probes[i], in slices of at most EXPAND_LIMIT pairs."""
    low = np.searchsorted(sorted_keys, probes, side="left")
    counts = np.searchsorted(sorted_keys, probes, side="right") - low
    start = 0
    while start < len(probes):
        totals = np.cumsum(counts[start:])
        stop = start + max(1, int(np.searchsorted(totals, EXPAND_LIMIT, side="right")))
        part = counts[start:stop]
        left = np.repeat(np.arange(start, stop), part)
        offsets = np.arange(len(left)) - np.repeat(np.cumsum(part) - part, part)
        yield left, order[np.repeat(low[start:stop], part) + offsets]
        start = stop


def semantic_pairs(vectors: np.ndarray, threshold: float) -> Pairs:
    """Pairs of unit vectors with cosine similarity at least `threshold`; score = the cosine."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count = len(vectors)
    rows = max(64, BLOCK_VALUES // max(count, 1))
    parts = []
    for start in range(0, count, rows):
        stop = min(start + rows, count)
        block = vectors[start:stop] @ vectors[start:].T
        hit_rows, hit_cols = np.nonzero(block >= threshold)
        upper = hit_cols > hit_rows  # column j is item start + j: keep each pair once
        hit_rows, hit_cols = hit_rows[upper], hit_cols[upper]
        parts.append(
            Pairs(hit_rows + start, hit_cols + start, block[hit_rows, hit_cols].astype(np.float64))
        )
    return Pairs.join(parts)


def components(count: int, pairs: Pairs) -> np.ndarray:
    """A group label per item: items joined by a chain of pairs share a label."""
    graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs.left, pairs.right)), shape=(count, count)
    )
    return connected_components(graph, directed=False)[1]


def neighbour_similarity(vectors: np.ndarray, neighbours: int) -> np.ndarray:
    """For each unit vector, the mean cosine similarity to its `neighbours` nearest others."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count = len(vectors)
    take = min(neighbours, count - 1)
    if take < 1:
        return np.zeros(count)
    rows = max(64, BLOCK_VALUES // count)
    result = np.empty(count)
    for start in range(0, count, rows):
        stop = min(start + rows, count)
        block = vectors[start:stop] @ vectors.T
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        result[start:stop] = np.partition(block, count - take, axis=1)[:, -take:].mean(axis=1)
    return result
