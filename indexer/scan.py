"""Walk a library root, or just some paths in it: image files with size and mtime, and problems.

A full scan walks the whole root. A partial scan (the watcher's) looks only at the paths events
named: a file, a folder (walked whole), or a path that is gone, whose catalog rows then count as
vanished by prefix, because a moved or deleted folder's children may never get events of their own.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pixseek.config import IndexerSettings
from pixseek.imaging import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)
DirKey = tuple[int, int]


@dataclass(frozen=True)
class FoundFile:
    """An image file seen on disk."""

    rel_path: str
    size: int
    mtime_ns: int


@dataclass
class RootScan:
    """What one walk of a root found. `problem` set means the root must not be trusted at all.

    `scope` is None for a full scan, else the relative paths a partial scan looked at. `empty`
    says the root holds nothing, which is what the mount point of an unmounted disk looks like.
    """

    root: str
    files: dict[str, FoundFile] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    unreadable_dirs: list[str] = field(default_factory=list)
    problem: str | None = None
    scope: tuple[str, ...] | None = None
    empty: bool = False

    def covers(self, rel_path: str) -> bool:
        """True if the scan looked at the path, and not from under an unreadable directory."""
        if self.scope is not None and not any(is_within(rel_path, rel) for rel in self.scope):
            return False
        return not any(is_within(rel_path, folder) for folder in self.unreadable_dirs)


def is_within(rel_path: str, folder: str) -> bool:
    """True if `rel_path` is `folder` or lies under it (`""` is the whole root)."""
    return not folder or rel_path == folder or rel_path.startswith(folder + "/")


def normalise_root(root: Path | str) -> str:
    """The absolute, `~`-expanded form of a root, used as the key in the catalog."""
    return os.path.abspath(os.path.expanduser(str(root)))


def locate(path: str, roots: Sequence[str]) -> tuple[str, str] | None:
    """(root, path relative to it) for an absolute path under one of `roots`; the deepest wins."""
    for root in sorted(roots, key=len, reverse=True):
        if path == root:
            return root, ""
        if path.startswith(root.rstrip("/") + "/"):
            return root, path[len(root.rstrip("/")) + 1 :]
    return None


def is_wanted(rel_path: str, is_dir: bool, settings: IndexerSettings) -> bool:
    """Whether a scan would look at this path: nothing hidden or excluded, an image if a file."""
    parts = rel_path.split("/") if rel_path else []
    for depth, name in enumerate(parts, start=1):
        if _skipped(name, "/".join(parts[:depth]), settings):
            return False
    return is_dir or os.path.splitext(rel_path)[1].lower() in IMAGE_EXTENSIONS


def scan_root(root: str, settings: IndexerSettings) -> RootScan:
    """Walk `root` without following directory loops; never raises for a bad entry."""
    scan = _checked(RootScan(root=root))
    if scan.problem is None:
        _walk(scan, [""], {_dir_key(root)}, settings)
        scan.empty = not scan.files
    return scan


def scan_paths(root: str, rel_paths: Iterable[str], settings: IndexerSettings) -> RootScan:
    """Look at these paths of `root` only: files, folders (walked whole) and gone paths."""
    scan = _checked(RootScan(root=root, scope=outermost(rel_paths)))
    if scan.problem is not None:
        return scan
    with os.scandir(root) as entries:
        scan.empty = next(entries, None) is None
    folders: list[tuple[str, DirKey]] = []
    for rel in scan.scope or ():
        if not is_wanted(rel, True, settings):
            continue
        full = os.path.join(root, rel)
        _visit(lambda full=full: os.stat(full), os.path.islink(full), rel, scan, folders, settings)
    _walk(scan, [rel for rel, _ in folders], {key for _, key in folders}, settings)
    return scan


def outermost(rel_paths: Iterable[str]) -> tuple[str, ...]:
    """The paths, less those inside another of them (a folder covers its children)."""
    kept: list[str] = []
    for rel in sorted(set(rel_paths)):
        if not kept or not is_within(rel, kept[-1]):
            kept.append(rel)
    return tuple(kept)


def _checked(scan: RootScan) -> RootScan:
    if not os.path.isdir(scan.root):
        scan.problem = "root is missing or not a directory (unmounted disk?)"
    elif not os.access(scan.root, os.R_OK | os.X_OK):
        scan.problem = "root is not readable"
    return scan


def _walk(
    scan: RootScan, pending: list[str], seen_dirs: set[DirKey], settings: IndexerSettings
) -> None:
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(scan.root, rel_dir)))
        except OSError as error:
            if not rel_dir:
                scan.problem = f"root is not readable: {error.strerror or error}"
                return
            log.warning("cannot read directory %s: %s", os.path.join(scan.root, rel_dir), error)
            scan.unreadable_dirs.append(rel_dir)
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if _skipped(entry.name, rel, settings):
                continue
            folders: list[tuple[str, DirKey]] = []
            _visit(entry.stat, entry.is_symlink(), rel, scan, folders, settings)
            for folder, key in folders:
                if key not in seen_dirs:
                    seen_dirs.add(key)
                    pending.append(folder)


def _visit(
    stat_of: Callable[[], os.stat_result],
    is_link: bool,
    rel: str,
    scan: RootScan,
    folders: list[tuple[str, DirKey]],
    settings: IndexerSettings,
) -> None:
    """Record an image file in `scan` or append a folder to `folders`; a gone path is skipped."""
    is_image = os.path.splitext(rel)[1].lower() in IMAGE_EXTENSIONS
    if is_link and not settings.follow_symlinks:
        return
    try:
        info = stat_of()
    except OSError as error:
        if is_image and (is_link or not isinstance(error, FileNotFoundError)):
            scan.broken[rel] = _link_problem(error)
        return
    if stat.S_ISDIR(info.st_mode):
        folders.append((rel, (info.st_dev, info.st_ino)))
    elif is_image and stat.S_ISREG(info.st_mode):
        scan.files[rel] = FoundFile(rel, info.st_size, info.st_mtime_ns)


def _skipped(name: str, rel: str, settings: IndexerSettings) -> bool:
    if name.startswith(".") and not settings.include_hidden:
        return True
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in settings.exclude)


def _dir_key(path: str) -> DirKey:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _link_problem(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno == errno.ENOENT:
        return "broken symlink (target missing)"
    return f"cannot stat: {error.strerror or error}"
