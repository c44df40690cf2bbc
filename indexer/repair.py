"""Make Chroma agree with the catalog: add what is missing from the cache, drop what is extra.

Chroma can lose unflushed writes when a process dies; the catalog cannot (SQLite, committed
before every Chroma write). Repair never runs the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pixseek.library import Library

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    """Records written back from the cache, and records removed because the catalog lacks them."""

    restored: int
    removed: int
    expected: int

    @property
    def changed(self) -> int:
        """How many records were touched."""
        return self.restored + self.removed


def repair(library: Library) -> RepairReport:
    """Compare ids in the catalog (indexed, embedding cached) with ids in Chroma, and fix them."""
    expected = {row.id: row for row in library.catalog.indexed(library.model_key)}
    present = set(library.store.ids())
    missing = [expected[record] for record in expected.keys() - present]
    extra = sorted(present - expected.keys())
    if missing:
        log.warning("restoring %d record(s) missing from Chroma from the cache", len(missing))
        library.publish(missing)
    if extra:
        log.warning("removing %d record(s) from Chroma that the catalog does not hold", len(extra))
        library.store.delete(extra)
    return RepairReport(restored=len(missing), removed=len(extra), expected=len(expected))
