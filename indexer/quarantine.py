"""Quarantine duplicates instead of deleting them, and put them back byte for byte.

Non-keepers are moved under a quarantine folder, keeping their full path below it (a file from
/photos/2024/a.jpg goes to DEST/photos/2024/a.jpg), so files from different roots never collide.
A JSON manifest lists every move; it is written before the first file moves, so an interrupted
run can still be undone. Moved files leave the catalog and Chroma at once (the next reconcile or
watcher event finds nothing left to do), and an undo puts their rows back from the manifest, so
restored files are recognised as unchanged without being decoded or embedded again. Nothing is
ever deleted; protected files are never moved.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pixseek.catalog import INDEXED, FileRow, content_hash
from pixseek.library import Library

if TYPE_CHECKING:  # groups come from the read path; only their shape is used here
    from pixseek.search.dedup import Group
    from pixseek.search.keepers import Member

MANIFEST_PREFIX = "manifest-"


class QuarantineError(ValueError):
    """The quarantine cannot be done as asked (a destination inside a library root, ...)."""


@dataclass
class Moved:
    """One file of a manifest: where it was, where it went, what it was."""

    original: str
    moved_to: str
    content_hash: str
    group: str
    tier: str
    record: dict[str, object]


@dataclass
class QuarantineReport:
    """What a quarantine did: the manifest, the moves, and the files left alone with why."""

    manifest: str
    moved: list[Moved] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The JSON form of the report."""
        return asdict(self)


@dataclass
class UndoReport:
    """What an undo did: files put back and files left in quarantine with why."""

    restored: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """The JSON form of the report."""
        return asdict(self)


def check_destination(library: Library, destination: Path) -> Path:
    """The destination, absolute; refused inside a library root (it would be indexed again)."""
    target = destination.expanduser().absolute()
    roots = {*library.catalog.roots(), *map(str, library.settings.indexer.roots)}
    for root in roots:
        base = Path(root).expanduser().absolute()
        if target == base or base in target.parents:
            raise QuarantineError(f"the quarantine folder {target} is inside the library {base}")
    return target


def quarantine(library: Library, groups: Sequence[Group], destination: Path) -> QuarantineReport:
    """Move every group's removable members under `destination` and write the manifest."""
    destination = check_destination(library, destination)
    report = QuarantineReport(manifest=str(_new_manifest_path(destination)))
    planned: list[tuple[Member, Moved]] = []
    for group in groups:
        for member in group.members:
            if member.id in group.protected and member.id != group.keeper.id:
                report.skipped.append({"path": member.path, "reason": "protected"})
        reason = _unchanged_problem(library, group.keeper)
        if reason:
            report.skipped += [
                {"path": m.path, "reason": f"keeper {group.keeper.path}: {reason}"}
                for m in group.removable
            ]
            continue
        for member in group.removable:
            target = destination / Path(member.path).relative_to(Path(member.path).anchor)
            row = library.catalog.get(member.id)
            record = asdict(row) if row else {}
            planned.append(
                (
                    member,
                    Moved(
                        member.path, str(target), member.content_hash, group.id, group.tier, record
                    ),
                )
            )
    _write_manifest(Path(report.manifest), [entry for _, entry in planned])
    gone: list[str] = []
    for member, entry in planned:
        reason = _unchanged_problem(library, member) or _target_problem(Path(entry.moved_to))
        if reason:
            report.skipped.append({"path": member.path, "reason": reason})
            continue
        Path(entry.moved_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(member.path, entry.moved_to)
        report.moved.append(entry)
        gone.append(member.id)
    library.catalog.delete(gone)
    library.store.delete(gone)
    _write_manifest(Path(report.manifest), report.moved)
    return report


def undo(library: Library, manifest: Path) -> UndoReport:
    """Put every file of a manifest back where it was, unless something else is there now."""
    report = UndoReport()
    rows: list[FileRow] = []
    for entry in read_manifest(manifest):
        original, quarantined = Path(entry.original), Path(entry.moved_to)
        if not quarantined.is_file():
            state = "already restored" if _holds(original, entry.content_hash) else "missing"
            report.skipped.append({"path": entry.original, "reason": f"{state}: {quarantined}"})
            continue
        if original.exists() or original.is_symlink():
            if _holds(original, entry.content_hash):
                reason = f"an identical file is already there; the copy stays at {quarantined}"
            else:
                reason = f"a different file is there now; not overwritten, left at {quarantined}"
            report.skipped.append({"path": entry.original, "reason": reason})
            continue
        original.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(quarantined, original)
        report.restored.append(entry.original)
        if entry.record:
            rows.append(FileRow(**entry.record))  # type: ignore[arg-type]
    _restore_rows(library, rows)
    return report


def read_manifest(manifest: Path) -> list[Moved]:
    """The moves a manifest lists; QuarantineError when it is not one."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        return [Moved(**entry) for entry in data["moved"]]
    except FileNotFoundError:
        raise QuarantineError(f"no manifest at {manifest}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise QuarantineError(f"{manifest} is not a pixseek dedup manifest ({error})") from None


def manifests(destination: Path) -> list[Path]:
    """The manifests in a quarantine folder, newest first."""
    if not destination.is_dir():
        return []
    return sorted(destination.glob(f"{MANIFEST_PREFIX}*.json"), reverse=True)


def _restore_rows(library: Library, rows: list[FileRow]) -> None:
    """Put restored files back in the catalog and Chroma from the cached embeddings."""
    cached = library.catalog.cached_hashes(library.model_key, (r.content_hash or "" for r in rows))
    ready = [r for r in rows if r.status == INDEXED and r.content_hash in cached]
    library.catalog.save(ready)
    library.publish(ready)


def _unchanged_problem(library: Library, member: Member) -> str | None:
    """Why a file must not be relied on or moved now (gone or changed since indexing)."""
    try:
        stat = os.stat(member.path)
    except FileNotFoundError:
        return "the file is gone"
    if (stat.st_size, stat.st_mtime_ns) != (member.size, member.mtime_ns):
        return "changed since it was indexed; run pixseek index first"
    return None


def _target_problem(target: Path) -> str | None:
    if target.exists() or target.is_symlink():
        return f"something is already at {target}"
    return None


def _holds(path: Path, expected_hash: str) -> bool:
    try:
        return path.is_file() and content_hash(path) == expected_hash
    except OSError:
        return False


def _new_manifest_path(destination: Path) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return destination / f"{MANIFEST_PREFIX}{stamp}-{secrets.token_hex(3)}.json"


def _write_manifest(path: Path, entries: Sequence[Moved]) -> None:
    """Write atomically: a crash leaves the old manifest or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": 1, "moved": [asdict(entry) for entry in entries]}
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(temporary, path)
