"""Perceptual hashes: a 64-bit pHash (imagehash) per image, so near-exact copies can be found.

A resized, recompressed or re-encoded copy keeps almost the same low-frequency structure, so its
pHash differs from the original's in a few bits; unrelated images differ in about half of them.
Hashes are stored as signed 64-bit integers because that is what SQLite holds.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

BITS = 64


def perceptual_hash(image: Image.Image) -> int:
    """The image's 64-bit pHash as a signed integer (SQLite's INTEGER)."""
    bits = imagehash.phash(image).hash.flatten()
    value = int("".join("1" if bit else "0" for bit in bits), 2)
    return value - (1 << BITS) if value >= 1 << (BITS - 1) else value


def as_unsigned(hashes: np.ndarray) -> np.ndarray:
    """Stored (signed) hashes as uint64, ready for XOR and popcount."""
    return np.asarray(hashes, dtype=np.int64).view(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between two arrays of uint64 hashes, element-wise."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)
