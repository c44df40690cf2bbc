"""Keep the index in step with folders: filesystem events trigger a reconcile once quiet.

Events are only hints (watchdog drops them on overflow, on moves out of the tree, on network
shares): any event marks the library dirty, and the reconcile scan, which is cheap for
unchanged files, decides what really changed. A periodic reconcile catches whatever no event
announced. Files still being written are deferred until they settle.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from pixseek.config import WatchSettings
from pixseek.indexer.pipeline import IndexReport, index_roots
from pixseek.library import Library

log = logging.getLogger(__name__)
INOTIFY_HINT = (
    "the inotify watch limit is reached; raise it with "
    "`sudo sysctl fs.inotify.max_user_watches=524288` (and max_user_instances); "
    "falling back to polling"
)


@dataclass
class WatchStatus:
    """What the status page shows about watching; updated by the watch loop."""

    roots: list[str] = field(default_factory=list)
    observer: str = "off"
    running: bool = False
    last_reconcile: float | None = None
    last_report: IndexReport | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        report = self.last_report
        return {
            "roots": self.roots,
            "observer": self.observer,
            "running": self.running,
            "last_reconcile": self.last_reconcile,
            "images_per_s": round(report.images_per_s, 2) if report else 0.0,
            "last_report": report.as_dict() if report else None,
            "notes": self.notes,
        }


class _DirtyFlag(FileSystemEventHandler):
    """Remembers that something happened, and when it last did."""

    def __init__(self) -> None:
        self.dirty = threading.Event()
        self.last_event = 0.0

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.last_event = time.monotonic()
        self.dirty.set()


def start_observer(roots: Sequence[str], settings: WatchSettings, handler) -> BaseObserver | None:
    """A running observer on every existing root, or None when watching is off."""
    if settings.observer == "off":
        return None
    observer = _schedule(_new_observer(settings), roots, handler)
    try:
        observer.start()
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EMFILE) or settings.observer == "polling":
            raise
        log.warning(INOTIFY_HINT)
        observer = _schedule(PollingObserver(timeout=settings.poll_interval_s), roots, handler)
        observer.start()
    return observer


def _new_observer(settings: WatchSettings) -> BaseObserver:
    if settings.observer == "polling":
        return PollingObserver(timeout=settings.poll_interval_s)
    return Observer()


def _schedule(observer: BaseObserver, roots: Sequence[str], handler) -> BaseObserver:
    for root in roots:
        if Path(root).is_dir():
            observer.schedule(handler, root, recursive=True)
    return observer


def watch(
    library: Library,
    roots: Sequence[str],
    stop: threading.Event,
    on_report: Callable[[IndexReport], None] = lambda _report: None,
    status: WatchStatus | None = None,
) -> None:
    """Reconcile now, then on every quiet burst of events and periodically, until `stop`."""
    settings = library.settings.watch
    status = status or WatchStatus()
    flag = _DirtyFlag()
    observer = start_observer(roots, settings, flag)
    status.roots, status.running = list(roots), True
    status.observer = type(observer).__name__ if observer else "off"

    def reconcile() -> IndexReport:
        report = index_roots(library, roots, settle_s=settings.settle_s)
        status.last_reconcile, status.last_report, status.notes = time.time(), report, report.notes
        on_report(report)
        return report

    try:
        reconcile()
        next_reconcile = time.monotonic() + settings.reconcile_minutes * 60
        pending, last_run = False, time.monotonic()
        while not stop.wait(0.2):
            now = time.monotonic()
            quiet = now - max(flag.last_event, last_run if pending else 0.0) >= settings.settle_s
            due = now >= next_reconcile
            if not ((flag.dirty.is_set() or pending) and quiet) and not due:
                continue
            flag.dirty.clear()
            last_run = now
            pending = reconcile().deferred > 0
            if due:
                next_reconcile = now + settings.reconcile_minutes * 60
    finally:
        status.running = False
        if observer is not None:
            observer.stop()
            observer.join(timeout=10)
