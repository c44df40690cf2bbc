"""Walk a library root: every image file with its size and mtime, and what could not be read."""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pixseek.config import IndexerSettings
from pixseek.imaging import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundFile:
    """An image file seen on disk."""

    rel_path: str
    size: int
    mtime_ns: int


@dataclass
class RootScan:
    """What one walk of a root found. `problem` set means the root must not be trusted at all."""

    root: str
    files: dict[str, FoundFile] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)
    unreadable_dirs: list[str] = field(default_factory=list)
    problem: str | None = None

    def covers(self, rel_path: str) -> bool:
        """True unless the path lies under a directory the walk could not read."""
        return not any(
            rel_path == folder or rel_path.startswith(folder + "/")
            for folder in self.unreadable_dirs
        )


def normalise_root(root: Path | str) -> str:
    """The absolute, `~`-expanded form of a root, used as the key in the catalog."""
    return os.path.abspath(os.path.expanduser(str(root)))


def scan_root(root: str, settings: IndexerSettings) -> RootScan:
    """Walk `root` without following directory loops; never raises for a bad entry."""
    scan = RootScan(root=root)
    if not os.path.isdir(root):
        scan.problem = "root is missing or not a directory (unmounted disk?)"
        return scan
    if not os.access(root, os.R_OK | os.X_OK):
        scan.problem = "root is not readable"
        return scan
    seen_dirs = {_dir_key(root)}
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except OSError as error:
            if not rel_dir:
                scan.problem = f"root is not readable: {error.strerror or error}"
                return scan
            log.warning("cannot read directory %s: %s", os.path.join(root, rel_dir), error)
            scan.unreadable_dirs.append(rel_dir)
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if _skipped(entry.name, rel, settings):
                continue
            _visit(entry, rel, scan, seen_dirs, pending, settings)
    return scan


def _visit(entry, rel, scan, seen_dirs, pending, settings: IndexerSettings) -> None:
    is_image = os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
    try:
        if entry.is_symlink() and not settings.follow_symlinks:
            return
        stat = entry.stat(follow_symlinks=True)
    except OSError as error:
        if is_image:
            scan.broken[rel] = _link_problem(error)
        return
    if entry.is_dir(follow_symlinks=True):
        key = (stat.st_dev, stat.st_ino)
        if key not in seen_dirs:
            seen_dirs.add(key)
            pending.append(rel)
    elif is_image and entry.is_file(follow_symlinks=True):
        scan.files[rel] = FoundFile(rel, stat.st_size, stat.st_mtime_ns)


def _skipped(name: str, rel: str, settings: IndexerSettings) -> bool:
    if name.startswith(".") and not settings.include_hidden:
        return True
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in settings.exclude)


def _dir_key(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _link_problem(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno == errno.ENOENT:
        return "broken symlink (target missing)"
    return f"cannot stat: {error.strerror or error}"
