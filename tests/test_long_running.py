"""A process that indexes again and again (a watcher, a server) keeps its resources flat."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pixseek.catalog import INDEXED, Catalog, FileRow
from pixseek.config import load_config
from pixseek.indexer.committer import Committer
from pixseek.indexer.pipeline import index_roots
from pixseek.library import Library
from tests.conftest import write_config
from tests.test_parity import photo_like


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("decode", ["batched", "workers"])
def test_runs_leave_no_database_files_open(tmp_path: Path, random_clip: Path, decode: str):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to count open files")
    root = tmp_path / "photos"
    root.mkdir()
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", decode=decode)
    library = Library(load_config(config).settings, writer=True)
    try:
        counts = []
        for number in range(12):  # each run adds a photo: commits, publishing, checkpoints
            photo_like(96 + number, 64).save(root / f"p{number}.jpg", quality=90)
            report = index_roots(library, [root])
            assert report.added == 1
            counts.append(_open_files())
        assert library.store.count() == 12
        assert counts[-1] - counts[2] <= 2, f"open files grew run by run: {counts}"
    finally:
        library.close()


def test_a_commit_thread_closes_its_connection(tmp_path: Path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    vector = np.ones(512, np.float32)

    def commit(number: int) -> None:
        rows = [
            FileRow(f"{number}-{i}", "/r", f"{number}-{i}.jpg", f"/r/{number}-{i}.jpg", 1, 1,
                    f"{number}-{i}", INDEXED)
            for i in range(50)
        ]  # fmt: skip
        catalog.save(rows, "model", {row.content_hash: vector for row in rows})

    with Committer(commit, catalog.release_thread) as committer:
        committer.put(0)
    after_one = _open_files()
    for run in range(1, 6):  # more runs reuse what SQLite keeps open for its locks, if anything
        with Committer(commit, catalog.release_thread) as committer:
            committer.put(run)
    assert _open_files() <= after_one
    assert catalog.counts("model")["indexed"] == 300
    catalog.close()
