"""Decide what a run must do, by comparing what is on disk with what the catalog remembers.

Cheap checks first: (size, mtime_ns) equal means unchanged. Only changed or new files are hashed;
the hash then tells an edit from a touch, and a new path whose content vanished elsewhere is a
move that keeps its embedding. Deletes pass the delete guard, which refuses whatever looks like
an unmounted disk or a mass deletion.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from pixseek.catalog import FAILED, INDEXED, Catalog, FileRow, content_hash, record_id
from pixseek.indexer.scan import FoundFile, RootScan

log = logging.getLogger(__name__)
HASH_THREADS = max(4, os.cpu_count() or 1)  # hashlib releases the GIL: one per core
HASH_GROUP = 16


@dataclass
class Plan:
    """The work of one run."""

    unchanged: int = 0
    deferred: list[str] = field(default_factory=list)
    touched: list[FileRow] = field(default_factory=list)
    moves: list[tuple[FileRow, FileRow]] = field(default_factory=list)
    to_decode: list[FileRow] = field(default_factory=list)
    replaced_ids: set[str] = field(default_factory=set)
    deletes: list[FileRow] = field(default_factory=list)
    failures: list[FileRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    root: str
    found: FoundFile
    row: FileRow | None
    content_hash: str | None = None


def make_plan(
    scans: Sequence[RootScan],
    catalog: Catalog,
    model: str,
    delete_share: float,
    allow_deletes: bool = False,
    on_hashed: Callable[[int], None] = lambda _n: None,
    settle_s: float = 0.0,
    on_changes: Callable[[int], None] = lambda _count: None,
    hash_new: bool = True,
) -> Plan:
    """Compare scans with the catalog; hashes only what changed.

    `on_changes` is called with their count before hashing when some files are new or changed
    (so the caller can load the model meanwhile). Without `hash_new`, files at new paths are
    left unhashed when no record vanished (so none of them can be a move): `to_decode` then
    holds rows without a `content_hash`, for a decode path that hashes the bytes it reads.

    Files modified less than `settle_s` ago are deferred (they may still be being written):
    they are neither indexed nor treated as vanished. A partial scan compares only the catalog
    rows at or under the paths it looked at.
    """
    plan = Plan()
    settled_before = time.time_ns() - int(settle_s * 1e9)
    candidates: list[_Candidate] = []
    vanished: dict[str, list[FileRow]] = {}
    for scan in scans:
        if scan.problem:
            plan.notes.append(f"{scan.root}: {scan.problem}; nothing there was changed")
            continue
        rows = catalog.rows_under(scan.root, scan.scope)
        cached = catalog.cached_hashes(
            model, (r.content_hash for r in rows.values() if r.content_hash)
        )
        for rel, found in scan.files.items():
            row = rows.get(rel)
            if settle_s and found.mtime_ns > settled_before:
                plan.deferred.append(os.path.join(scan.root, rel))
                continue
            if row and (row.size, row.mtime_ns) == (found.size, found.mtime_ns):
                if _is_settled(row, cached):
                    plan.unchanged += 1
                    continue
                candidates.append(_Candidate(scan.root, found, row, row.content_hash))
            else:
                candidates.append(_Candidate(scan.root, found, row))
        for rel, reason in scan.broken.items():
            plan.failures.append(_failed(scan.root, rel, FoundFile(rel, 0, 0), None, reason))
        vanished[scan.root] = [
            row
            for rel, row in rows.items()
            if rel not in scan.files and scan.covers(rel) and rel not in scan.broken
        ]
    if candidates:
        on_changes(len(candidates))
    moves_possible = any(row.status == INDEXED for rows in vanished.values() for row in rows)
    _hash_all(candidates, plan, on_hashed, hash_new or moves_possible)
    _resolve(candidates, vanished, catalog, model, plan)
    for root, rows in vanished.items():
        scan = next(s for s in scans if s.root == root)
        _guard_deletes(scan, rows, catalog, delete_share, allow_deletes, plan)
    return plan


def _is_settled(row: FileRow, cached: set[str]) -> bool:
    if row.status == INDEXED:
        return row.content_hash in cached
    return not row.retryable


def _hash_all(
    candidates: list[_Candidate], plan: Plan, on_hashed: Callable[[int], None], hash_new: bool
) -> None:
    todo: list[_Candidate] = []
    unhashed: list[_Candidate] = []  # new paths the decode path hashes as it reads them
    for candidate in candidates:
        if candidate.content_hash is None:
            (todo if hash_new or candidate.row is not None else unhashed).append(candidate)

    def digest(candidate: _Candidate) -> str | OSError:
        try:
            return content_hash(os.path.join(candidate.root, candidate.found.rel_path))
        except OSError as error:
            return error

    def digest_group(group: list[_Candidate]) -> list[str | OSError]:
        digests = [digest(candidate) for candidate in group]
        on_hashed(len(group))
        return digests

    # threads take groups of files: one task per small file costs more in hand-offs than hashing
    groups = [todo[start : start + HASH_GROUP] for start in range(0, len(todo), HASH_GROUP)]
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        results = (digest for group in pool.map(digest_group, groups) for digest in group)
        for candidate, result in zip(todo, results, strict=True):
            if isinstance(result, OSError):
                candidate.content_hash = None
                if reason := unreadable_reason(result):
                    plan.failures.append(
                        _failed(
                            candidate.root,
                            candidate.found.rel_path,
                            candidate.found,
                            candidate.row,
                            reason,
                        )
                    )
            else:
                candidate.content_hash = result
    candidates[:] = [c for c in candidates if c.content_hash is not None] + unhashed


def unreadable_reason(error: OSError) -> str | None:
    """Why a file could not be read, for its failure record; None when it is simply gone."""
    if isinstance(error, FileNotFoundError):
        return None
    if isinstance(error, PermissionError):
        return "permission denied"
    return f"cannot read: {error.strerror or error}"


def _resolve(
    candidates: list[_Candidate],
    vanished: dict[str, list[FileRow]],
    catalog: Catalog,
    model: str,
    plan: Plan,
) -> None:
    gone_by_hash: dict[str, list[FileRow]] = defaultdict(list)
    for rows in vanished.values():
        for row in rows:
            if row.status == INDEXED and row.content_hash:
                gone_by_hash[row.content_hash].append(row)
    cached = catalog.cached_hashes(model, (c.content_hash for c in candidates if c.content_hash))
    moved_ids: set[str] = set()
    for candidate in candidates:
        fresh = _row_for(candidate)
        row = candidate.row
        if (
            row
            and row.status == INDEXED
            and row.content_hash == fresh.content_hash
            and (fresh.content_hash in cached)
        ):
            plan.touched.append(replace(row, size=fresh.size, mtime_ns=fresh.mtime_ns))
        elif row is None and gone_by_hash.get(fresh.content_hash) and fresh.content_hash in cached:
            old = gone_by_hash[fresh.content_hash].pop()
            moved_ids.add(old.id)
            kept = dict(
                width=old.width,
                height=old.height,
                format=old.format,
                taken_at=old.taken_at,
                camera=old.camera,
            )
            plan.moves.append((old, replace(fresh, status=INDEXED, **kept)))
        else:
            if row and row.status == INDEXED:
                plan.replaced_ids.add(row.id)
            plan.to_decode.append(fresh)
    for root, rows in vanished.items():
        vanished[root] = [row for row in rows if row.id not in moved_ids]


def _guard_deletes(
    scan: RootScan,
    gone: list[FileRow],
    catalog: Catalog,
    share: float,
    allow: bool,
    plan: Plan,
) -> None:
    gone_indexed = [row for row in gone if row.status == INDEXED]
    if gone_indexed and not allow:
        total = catalog.count_under(scan.root, INDEXED)
        if scan.empty:
            plan.notes.append(
                f"{scan.root}: root is empty, so {len(gone_indexed)} record(s) were NOT deleted "
                "(an unmounted disk looks like this); run with --allow-deletes if it is meant"
            )
            return
        if len(gone_indexed) > share * total:
            plan.notes.append(
                f"{scan.root}: {len(gone_indexed)} of {total} records vanished, more than "
                f"indexer.delete_guard_share ({share:.0%}); nothing was deleted; run with "
                "--allow-deletes if it is meant"
            )
            return
    plan.deletes.extend(gone)


def _row_for(candidate: _Candidate) -> FileRow:
    rel = candidate.found.rel_path
    return FileRow(
        id=record_id(candidate.root, rel),
        root=candidate.root,
        rel_path=rel,
        path=os.path.join(candidate.root, rel),
        size=candidate.found.size,
        mtime_ns=candidate.found.mtime_ns,
        content_hash=candidate.content_hash,
        status=INDEXED,
    )


def _failed(root: str, rel: str, found: FoundFile, row: FileRow | None, reason: str) -> FileRow:
    failed = FileRow(
        id=record_id(root, rel),
        root=root,
        rel_path=rel,
        path=os.path.join(root, rel),
        size=found.size,
        mtime_ns=found.mtime_ns,
        content_hash=row.content_hash if row else None,
        status=FAILED,
        reason=reason,
    )
    log.warning("cannot index %s: %s", failed.path, reason)
    return failed
