"""What the status page and /api/status show about watching, kept up to date by the watch loop.

It is also the watch loop's `Progress`: the files of the current run still to decode and embed
are the decode queue, and the images done in the last seconds give the current rate.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from pixseek.indexer.dirty import DirtyPaths
from pixseek.indexer.pipeline import IndexReport

RATE_WINDOW_S = 10.0
MAX_NOTES = 20


class WatchStatus:
    """Shared between the watch loop (writer) and the web app (reader)."""

    def __init__(self, roots: list[str] | None = None) -> None:
        self.roots = list(roots or [])
        self.observer = "off"
        self.running = False
        self.root_states: dict[str, str] = {}
        self.dirty: DirtyPaths | None = None
        self.rescans = 0
        self.embedded_images = 0
        self.last_reconcile: float | None = None
        self.last_report: IndexReport | None = None
        self.notes: deque[str] = deque(maxlen=MAX_NOTES)
        self._phase = ""
        self._to_decode = 0
        self._done: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def note(self, text: str) -> None:
        """Keep a message for the status page (repeats of the latest are dropped)."""
        if not self.notes or self.notes[-1] != text:
            self.notes.append(text)

    def start(self, phase: str, total: int) -> None:
        """Progress: a run entered `phase` with `total` files."""
        self._phase = phase
        self._to_decode = total if phase == "indexing" else 0

    def advance(self, count: int) -> None:
        """Progress: `count` more files of the current phase are done."""
        if self._phase != "indexing":
            return
        with self._lock:  # commits and refusals report from different threads
            self._to_decode = max(self._to_decode - count, 0)
            self._done.append((time.monotonic(), count))

    def embedded(self, count: int) -> None:
        """Progress: `count` more images went through the model (a total since start)."""
        self.embedded_images += count

    def finished(self, report: IndexReport, full: bool) -> None:
        """A run ended; a full one is the last reconcile."""
        self._phase, self._to_decode = "", 0
        if full:
            self.last_reconcile, self.last_report = time.time(), report
        for text in report.notes:
            self.note(text)

    def images_per_s(self) -> float:
        """Images decoded and embedded per second over the last few seconds."""
        now = time.monotonic()
        with self._lock:
            while self._done and self._done[0][0] < now - RATE_WINDOW_S:
                self._done.popleft()
            done = sum(count for _, count in self._done)
        return done / RATE_WINDOW_S

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        report, dirty = self.last_report, self.dirty
        return {
            "roots": [
                {"root": root, "state": self.root_states.get(root, "off")} for root in self.roots
            ],
            "observer": self.observer,
            "running": self.running,
            "queue": {
                "pending_paths": 0 if dirty is None else len(dirty),
                "decode": self._to_decode,
            },
            "images_per_s": round(self.images_per_s(), 2),
            "embedded": self.embedded_images,
            "overflows": 0 if dirty is None else dirty.overflows,
            "rescans": self.rescans,
            "last_reconcile": self.last_reconcile,
            "last_report": report.as_dict() if report else None,
            "notes": list(self.notes),
        }
