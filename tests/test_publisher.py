"""Chroma writes during a long run: rows become searchable as the run goes, not at its end."""

from __future__ import annotations

import time

import numpy as np

from pixseek.catalog import INDEXED, FileRow, record_id
from pixseek.config import load_config
from pixseek.indexer.publisher import Publisher
from pixseek.library import Library
from tests.conftest import write_config


def test_rows_reach_chroma_while_batches_keep_coming(tmp_path, random_clip):
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    library = Library(load_config(config).settings, writer=True)
    rng = np.random.default_rng(0)
    try:
        with Publisher(library) as publisher:
            started = time.monotonic()
            for number in range(40):  # one small batch every 50 ms for 2 s, as a run does
                rel = f"{number:03d}.jpg"
                row = FileRow(
                    record_id("/pics", rel),
                    "/pics",
                    rel,
                    f"/pics/{rel}",
                    100,
                    1,
                    f"hash{number}",
                    INDEXED,
                )
                vector = rng.standard_normal(32).astype(np.float32)
                library.catalog.save([row], library.model_key, {row.content_hash: vector})
                publisher.upsert([row])
                time.sleep(0.05)
            during = library.store.count()
            elapsed = time.monotonic() - started
        assert elapsed < 5 and during >= 10, f"{during} of 40 rows searchable after {elapsed} s"
        assert library.store.count() == 40
    finally:
        library.close()
