"""The watcher's dirty paths: marked by events, handed out once settled, bounded.

A path is settled when its size and mtime have not changed for `settle_s`: every event on it
restarts the wait, and when the wait is over the path is looked at again, so a file that is
still being written without events is held back too. The set is bounded: past `max_pending`
paths the events are no longer worth tracking one by one, so the set is dropped and a full
rescan is asked for instead.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

Signature = tuple[int, int] | None  # (size, mtime_ns), or None when the path does not exist


def signature(path: str) -> Signature:
    """Size and mtime of a path, or None when it is gone or unreadable."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


@dataclass
class _Entry:
    seen: Signature
    due: float


class DirtyPaths:
    """Thread-safe: the observer's thread marks, the watch loop takes."""

    def __init__(self, settle_s: float, max_pending: int) -> None:
        self.settle_s = settle_s
        self.max_pending = max_pending
        self.overflows = 0
        self._entries: dict[str, _Entry] = {}
        self._overflowed = False
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def mark(self, path: str) -> None:
        """Note a change at `path`; it is handed out `settle_s` after its last change."""
        seen = signature(path)
        with self._lock:
            if self._overflowed:
                return  # a full rescan is due anyway
            if path not in self._entries and len(self._entries) >= self.max_pending:
                self._entries.clear()
                self._overflowed = True
                self.overflows += 1
                return
            self._entries[path] = _Entry(seen, time.monotonic() + self.settle_s)

    def take_overflow(self) -> bool:
        """True once after an overflow; marking resumes from then on."""
        with self._lock:
            overflowed, self._overflowed = self._overflowed, False
            return overflowed

    def take_settled(self) -> list[str]:
        """Remove and return the paths whose wait is over and that did not change meanwhile.

        A path that changed without an event (a writer that keeps going) waits again.
        """
        now = time.monotonic()
        with self._lock:
            due = [path for path, entry in self._entries.items() if entry.due <= now]
            settled = []
            for path in due:
                entry = self._entries[path]
                seen = signature(path)
                if seen != entry.seen:
                    self._entries[path] = _Entry(seen, now + self.settle_s)
                else:
                    settled.append(path)
                    del self._entries[path]
            return settled
