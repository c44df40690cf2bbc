"""One indexing run: repair, scan, plan, then decode → batch → embed → write, then deletes.

Each embedded batch is committed to the catalog (rows and vectors) before it is written to
Chroma, so a run killed at any point resumes without embedding anything twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from pixseek.catalog import FAILED, INDEXED, FileRow
from pixseek.imaging import PreparedImage
from pixseek.indexer.decode import DecodeFailure, DecodePool
from pixseek.indexer.plan import Plan, make_plan
from pixseek.indexer.repair import repair
from pixseek.indexer.scan import normalise_root, scan_root
from pixseek.library import Library

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Where a run reports progress (the CLI draws a bar; tests pass nothing)."""

    def start(self, phase: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


class _Silent:
    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


@dataclass
class IndexReport:
    """What a run did; `embedded` counts images that went through the model."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    embedded: int = 0
    repaired: int = 0
    decoded: int = 0
    deferred: int = 0
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        """Images decoded and written per second of the whole run."""
        return self.decoded / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        """The one-line summary printed at the end of a run."""
        return (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, "
            f"deleted {self.deleted}, unchanged {self.unchanged}, failed {self.failed} "
            f"in {self.elapsed:.1f} s ({self.images_per_s:.1f} images/s, "
            f"{self.embedded} embedded)"
        )

    def as_dict(self) -> dict[str, object]:
        """Machine-readable form for --json."""
        return asdict(self) | {"images_per_s": round(self.images_per_s, 2)}


def index_roots(
    library: Library,
    roots: Sequence[Path | str],
    progress: Progress | None = None,
    allow_deletes: bool = False,
    settle_s: float = 0.0,
) -> IndexReport:
    """Bring the catalog and Chroma in line with the files under `roots`.

    With `settle_s`, files modified more recently than that are left for a later run.
    """
    progress = progress or _Silent()
    started = time.perf_counter()
    report = IndexReport(repaired=repair(library).changed)
    scans = [scan_root(normalise_root(root), library.settings.indexer) for root in roots]
    progress.start("hashing", sum(len(scan.files) for scan in scans))
    plan = make_plan(
        scans,
        library.catalog,
        library.model_key,
        library.settings.indexer.delete_guard_share,
        allow_deletes,
        on_hashed=progress.advance,
        settle_s=settle_s,
    )
    report.unchanged = plan.unchanged + len(plan.touched)
    report.deferred = plan.deferred
    report.notes = plan.notes
    _apply_moves_and_touches(library, plan, report)
    _record_failures(library, plan.failures, report)
    if plan.to_decode:
        progress.start("indexing", len(plan.to_decode))
        _decode_and_embed(library, plan, report, progress)
    _apply_deletes(library, plan.deletes, report)
    report.elapsed = time.perf_counter() - started
    return report


def _apply_moves_and_touches(library: Library, plan: Plan, report: IndexReport) -> None:
    for old, new in plan.moves:
        library.catalog.move(old.id, new)
    library.catalog.save(plan.touched)
    library.store.delete([old.id for old, _ in plan.moves])
    library.publish([new for _, new in plan.moves] + plan.touched)
    report.moved = len(plan.moves)


def _record_failures(library: Library, rows: Sequence[FileRow], report: IndexReport) -> None:
    if not rows:
        return
    library.catalog.save(rows)
    library.store.delete([row.id for row in rows])
    report.failed += len(rows)


def _apply_deletes(library: Library, rows: Sequence[FileRow], report: IndexReport) -> None:
    ids = [row.id for row in rows]
    library.catalog.delete(ids)
    library.store.delete(ids)
    report.deleted = sum(1 for row in rows if row.status == INDEXED)


def _decode_and_embed(
    library: Library, plan: Plan, report: IndexReport, progress: Progress
) -> None:
    embedder = library.embedder
    settings = library.settings.indexer
    batch: list[tuple[FileRow, np.ndarray]] = []
    phashes: dict[str, int] = {}  # saved with each batch; dedup computes any that are missing
    with DecodePool(settings.workers, library.limits, embedder.spec, settings.queue_size) as pool:
        for row, result in pool.decode((row, row.path) for row in plan.to_decode):
            progress.advance(1)
            if isinstance(result, DecodeFailure):
                log.warning("cannot index %s: %s", row.path, result.reason)
                failed = replace(
                    row, status=FAILED, reason=result.reason, retryable=result.retryable
                )
                _record_failures(library, [failed], report)
                continue
            batch.append((_described(row, result), result.pixels))
            if result.phash is not None:
                phashes[row.content_hash] = result.phash
            if len(batch) >= embedder.batch_size:
                _write_batch(library, batch, plan, report)
                library.catalog.save_phashes(phashes)
                batch, phashes = [], {}
        _write_batch(library, batch, plan, report)
        library.catalog.save_phashes(phashes)


def _described(row: FileRow, image: PreparedImage) -> FileRow:
    return replace(
        row,
        status=INDEXED,
        reason=None,
        retryable=False,
        width=image.width,
        height=image.height,
        format=image.format,
        taken_at=image.taken_at,
        camera=image.camera,
    )


def _write_batch(
    library: Library, batch: list[tuple[FileRow, np.ndarray]], plan: Plan, report: IndexReport
) -> None:
    if not batch:
        return
    model = library.model_key
    cached = library.catalog.cached_hashes(model, (row.content_hash for row, _ in batch))
    fresh: dict[str, np.ndarray] = {}
    for row, pixels in batch:
        if row.content_hash not in cached and row.content_hash not in fresh:
            fresh[row.content_hash] = pixels
    embeddings = {}
    if fresh:
        vectors = library.embedder.encode_pixels(list(fresh.values()))
        embeddings = dict(zip(fresh, vectors, strict=True))
        report.embedded += len(fresh)
    rows = [row for row, _ in batch]
    library.catalog.save(rows, model, embeddings)
    library.publish(rows)
    report.decoded += len(rows)
    for row in rows:
        if row.id in plan.replaced_ids:
            report.updated += 1
        else:
            report.added += 1
