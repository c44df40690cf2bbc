"""How the catalog stores images and their vectors: compact for new catalogs, and older catalogs
open with everything they held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from pixseek.catalog import _MIGRATIONS, INDEXED, Catalog, FileRow


def _rows(count: int) -> list[FileRow]:
    return [
        FileRow(f"id{i}", "/r", f"{i}.jpg", f"/r/{i}.jpg", 1, 1, f"h{i:038d}", INDEXED)
        for i in range(count)
    ]


def _on_disk(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


def test_a_new_catalog_stores_an_image_and_its_vector_in_under_3_5_kb(tmp_path):
    """A 512-d vector is 2 KB: with small pages each took a page of 4 KB of its own."""
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    rng = np.random.default_rng(0)
    rows = _rows(1000)
    for start in range(0, 1000, 100):
        chunk = rows[start : start + 100]
        vectors = {row.content_hash: rng.normal(size=512).astype(np.float32) for row in chunk}
        catalog.save(chunk, "model", vectors)
    catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert catalog.counts("model") == {"indexed": 1000, "failed": 0, "cached_embeddings": 1000}
    assert _on_disk(tmp_path) < 3_500_000, f"{_on_disk(tmp_path)} bytes for 1,000 images"
    catalog.close()


def test_an_older_catalog_opens_with_its_rows_and_vectors(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    older = sqlite3.connect(path)
    older.execute("PRAGMA page_size = 4096")
    for number, script in enumerate(_MIGRATIONS[:-1], start=1):
        older.executescript(script)
        older.execute(f"PRAGMA user_version = {number}")
    older.commit()
    older.close()
    old = Catalog(path)
    rows = _rows(3)
    old.save(rows[:2], "model", {row.content_hash: np.ones(4, np.float32) for row in rows[:2]})
    old.close()

    catalog = Catalog(path)
    catalog.save(rows[2:], "model", {rows[2].content_hash: np.zeros(4, np.float32)})
    assert catalog.counts("model")["indexed"] == 3
    assert catalog.cached_hashes("model", [row.content_hash for row in rows]) == {
        row.content_hash for row in rows
    }
    first = rows[0]
    assert catalog.records_with_hashes([first.content_hash]) == [(first.id, first.content_hash)]
    assert catalog.db.execute("PRAGMA page_size").fetchone()[0] == 4096  # kept as it was made
    catalog.close()
