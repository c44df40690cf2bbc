"""Chroma writes during a long run: rows become searchable as the run goes, not at its end."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from pixseek.catalog import INDEXED, FileRow, record_id
from pixseek.config import load_config
from pixseek.indexer.publisher import Publisher
from pixseek.library import Library
from tests.conftest import write_config


def _cached_row(library: Library, number: int, rng: np.random.Generator) -> FileRow:
    """A row whose vector is in the catalog's cache, as the indexer commits them."""
    rel = f"{number:03d}.jpg"
    row = FileRow(
        record_id("/pics", rel), "/pics", rel, f"/pics/{rel}", 100, 1, f"hash{number}", INDEXED
    )
    vector = rng.standard_normal(32).astype(np.float32)
    library.catalog.save([row], library.model_key, {row.content_hash: vector})
    return row


@pytest.fixture
def library(tmp_path, random_clip) -> Iterator[Library]:
    """A library that owns its data dir (as an indexing run's does)."""
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    opened = Library(load_config(config).settings, writer=True)
    yield opened
    opened.close()


def test_rows_reach_chroma_while_batches_keep_coming(library):
    rng = np.random.default_rng(0)
    with Publisher(library) as publisher:
        started = time.monotonic()
        for number in range(40):  # one small batch every 50 ms for 2 s, as a run does
            publisher.upsert([_cached_row(library, number, rng)])
            time.sleep(0.05)
        during = library.store.count()
        elapsed = time.monotonic() - started
    assert elapsed < 5 and during >= 10, f"{during} of 40 rows searchable after {elapsed} s"
    assert library.store.count() == 40


def test_a_bulk_run_writes_chroma_in_large_steps_then_catches_up(library):
    rng = np.random.default_rng(0)
    with Publisher(library) as publisher:
        with publisher.bulk():
            for number in range(20):
                publisher.upsert([_cached_row(library, number, rng)])
                time.sleep(0.05)
            held = library.store.count()
        deadline = time.monotonic() + 5
        while library.store.count() < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        caught_up = library.store.count()
    assert held == 0, f"{held} rows written while the bulk run was embedding"
    assert caught_up == 20, "the rows were not written when the bulk run ended"
