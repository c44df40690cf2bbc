"""Which file of a duplicate group to keep, and which files no dedup action may ever move.

A file matching `dedup.prefer_paths` wins first; then `dedup.keep_rules` are applied in order
(largest_pixels, largest_file, format, oldest, newest, shortest_path), each one only breaking
the ties left by the ones before; the path breaks any tie that remains, so the choice is stable.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from pixseek.config import DedupSettings


@dataclass(frozen=True)
class Member:
    """One file of a duplicate group, with the facts the keep rules look at."""

    id: str
    path: str
    root: str
    rel_path: str
    content_hash: str
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    format: str | None
    taken_at: float | None

    @property
    def pixels(self) -> int:
        """Width times height (0 when unknown)."""
        return (self.width or 0) * (self.height or 0)

    @property
    def when(self) -> float:
        """When the picture was taken (EXIF), else when the file was last modified."""
        return self.taken_at if self.taken_at is not None else self.mtime_ns / 1e9


def matches(member: Member, patterns: Sequence[str]) -> bool:
    """True when a glob matches the file's absolute path, its path under its root or its name."""
    candidates = (member.path, member.rel_path, PurePath(member.path).name)
    return any(fnmatch.fnmatch(text, pattern) for pattern in patterns for text in candidates)


def is_protected(member: Member, settings: DedupSettings) -> bool:
    """Files under `dedup.protect_paths` are never moved."""
    return matches(member, settings.protect_paths)


def choose_keeper(members: Sequence[Member], settings: DedupSettings) -> Member:
    """The member the keep rules rank first."""
    rules = [_RULES[name](settings) for name in settings.keep_rules]

    def rank(member: Member) -> tuple:
        preferred = 0 if matches(member, settings.prefer_paths) else 1
        return (preferred, *(rule(member) for rule in rules), member.path)

    return min(members, key=rank)


def _format_rank(settings: DedupSettings) -> Callable[[Member], int]:
    order = {name.upper(): place for place, name in enumerate(settings.format_preference)}
    return lambda member: order.get((member.format or "").upper(), len(order))


_RULES: dict[str, Callable[[DedupSettings], Callable[[Member], float | int]]] = {
    "largest_pixels": lambda _s: lambda member: -member.pixels,
    "largest_file": lambda _s: lambda member: -member.size,
    "format": _format_rank,
    "oldest": lambda _s: lambda member: member.when,
    "newest": lambda _s: lambda member: -member.when,
    "shortest_path": lambda _s: lambda member: len(member.path),
}
