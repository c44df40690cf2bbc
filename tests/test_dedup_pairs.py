"""Pair finding is exact: bucketed and blocked searches return what comparing all pairs would."""

from __future__ import annotations

import numpy as np
import pytest

from pixseek.phash import hamming
from pixseek.search import pairs as pair_search
from pixseek.search.pairs import components, near_pairs, semantic_pairs


def brute_force(scores: np.ndarray, keep: np.ndarray) -> set[tuple[int, int]]:
    left, right = np.triu_indices(len(scores), 1)
    chosen = keep[left, right]
    return set(zip(left[chosen].tolist(), right[chosen].tolist(), strict=True))


def found(result) -> set[tuple[int, int]]:
    return set(zip(result.left.tolist(), result.right.tolist(), strict=True))


def planted_hashes(count: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes, every 7th followed by a copy with 0-10 bits flipped, some shared."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=count, dtype=np.int64).astype(np.uint64)
    for start in range(0, count - 3, 7):
        flipped = int(hashes[start])
        for bit in rng.choice(64, size=rng.integers(0, 11), replace=False):
            flipped ^= 1 << int(bit)
        hashes[start + 1] = np.uint64(flipped)
        if start % 3 == 0:
            hashes[start + 2] = hashes[start + 3] = hashes[start]
    return hashes


@pytest.mark.parametrize("max_distance", [0, 1, 3, 4, 6, 7, 10])
def test_near_pairs_are_every_pair_within_the_distance(max_distance):
    hashes = planted_hashes(1500, seed=max_distance)
    distances = hamming(hashes[:, None], hashes[None, :])
    expected = brute_force(distances, distances <= max_distance)
    assert len(expected) > 100
    assert found(near_pairs(hashes, max_distance)) == expected


def test_a_crowded_hash_value_still_forms_one_group(monkeypatch):
    monkeypatch.setattr(pair_search, "STAR_ABOVE", 10)
    hashes = np.array([5] * 50 + [5 ^ 0b11, 2**40], dtype=np.uint64)
    labels = components(len(hashes), near_pairs(hashes, 2))
    assert len(set(labels[:51])) == 1 and labels[51] != labels[0]


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.95])
def test_semantic_pairs_are_every_pair_above_the_threshold(monkeypatch, threshold):
    monkeypatch.setattr(pair_search, "BLOCK_VALUES", 64 * 700)  # several blocks
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((700, 16)).astype(np.float32)
    vectors[1::5] = vectors[::5][: len(vectors[1::5])] + 0.05
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = vectors @ vectors.T
    result = semantic_pairs(vectors, threshold)
    assert found(result) == brute_force(cosines, cosines >= threshold)
    assert np.allclose(result.score, cosines[result.left, result.right], atol=1e-5)
