"""Keep the index in step with folders: events mark paths dirty, settled paths get indexed.

Events are only hints (watchdog loses them on overflow, on moves out of the tree, on network
shares). They mark paths dirty; once a path has settled, a run looks at the dirty paths only, a
folder by prefix. A periodic full reconcile catches whatever no event announced, and so does a
rescan when more paths are pending than `watch.max_pending`. A run that fails for a reason that
may pass (a store that went away, a full disk) is noted, and a full reconcile retries it soon
after, backing off while it keeps failing; its repair step publishes what the failed run left.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)

from pixseek.config import IndexerSettings
from pixseek.embedder import ModelLoadError
from pixseek.indexer.dirty import DirtyPaths
from pixseek.indexer.observe import RootWatches
from pixseek.indexer.pipeline import IndexReport, index_paths, index_roots
from pixseek.indexer.read_processes import ReadProcesses
from pixseek.indexer.scan import is_wanted, locate
from pixseek.indexer.status import WatchStatus
from pixseek.library import Library
from pixseek.lock import StoreLockedError

TICK_S = 0.1
RETRY_FIRST_S = 2.0  # after a failed run; doubled on each failure in a row
FATAL_ERRORS = (ModelLoadError, StoreLockedError)  # retrying would not help: the command ends
log = logging.getLogger(__name__)
_READS = {EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE}  # our own hashing and decoding


class _MarkDirty(FileSystemEventHandler):
    """Turns events into dirty paths: both ends of a move, only paths a scan would look at."""

    def __init__(self, dirty: DirtyPaths, roots: Sequence[str], settings: IndexerSettings):
        self.dirty, self.roots, self.settings = dirty, roots, settings

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _READS:
            return
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return  # a folder's entries changed: the entries have events of their own
        for path in (event.src_path, event.dest_path):
            found = locate(os.fsdecode(path), self.roots) if path else None
            if found and is_wanted(found[1], event.is_directory, self.settings):
                self.dirty.mark(os.fsdecode(path))


def watch(
    library: Library,
    roots: Sequence[str],
    stop: threading.Event,
    on_report: Callable[[IndexReport], None] = lambda _report: None,
    status: WatchStatus | None = None,
    early_readers: ReadProcesses | None = None,
) -> None:
    """Reconcile, then index dirty paths as they settle and reconcile periodically, until `stop`.

    `on_report` gets every full reconcile's report and every other run that changed something.
    `early_readers` (from `read_processes.start_early`) serve the first reconcile.
    """
    settings = library.settings.watch
    status = status or WatchStatus()
    dirty = DirtyPaths(settings.settle_s, settings.max_pending)
    status.roots, status.dirty = list(roots), dirty
    watches = RootWatches(roots, settings, _MarkDirty(dirty, roots, library.settings.indexer))

    interval_s = settings.reconcile_minutes * 60
    failures, retry_at = 0, math.inf  # retry_at: when a full pass retries failed runs

    def run(index: Callable[[], IndexReport], full: bool) -> None:
        """Run `index`; if it fails for a reason that may pass (a store that went away, a full
        disk), note it and have a full pass retry soon, later after each failure in a row."""
        nonlocal failures, retry_at
        try:
            report = index()
        except FATAL_ERRORS as error:
            status.note(f"watching stopped: {error}")  # for the status page of a server
            raise
        except Exception as error:
            failures += 1
            retry_s = min(RETRY_FIRST_S * 2 ** (failures - 1), interval_s)
            text = f"indexing failed ({type(error).__name__}: {error}); a full pass retries in"
            log.warning("%s %.0f s", text, retry_s)
            log.debug("the failed run", exc_info=True)
            status.note(f"{text} {retry_s:.0f} s")
            retry_at = min(retry_at, time.monotonic() + retry_s)
            return
        failures = 0
        status.finished(report, full)
        for path in report.deferred_paths:
            dirty.mark(path)
        if full or report.changed:
            on_report(report)

    def reconcile(which: Sequence[str], readers: ReadProcesses | None = None) -> None:
        index = partial(
            index_roots, library, which, status, settle_s=settings.settle_s, early_readers=readers
        )
        run(index, full=True)

    def follow_roots() -> list[str]:
        gone, back = watches.refresh()
        for root in gone:
            status.note(f"{root}: root is missing (unmounted disk?); nothing there is deleted")
        for text in watches.take_notes():
            status.note(text)
        status.observer, status.root_states = watches.kind, watches.states()
        return back

    watches.start()
    follow_roots()
    status.running = True

    try:
        reconcile(roots, early_readers)
        next_reconcile = time.monotonic() + interval_s
        while not stop.wait(TICK_S):
            back = follow_roots()
            if back:
                reconcile(back)
            if dirty.take_overflow():
                status.rescans += 1
                status.note(
                    f"more than {settings.max_pending} paths changed at once "
                    "(watch.max_pending): rescanning everything"
                )
                next_reconcile = 0.0
            if time.monotonic() >= min(next_reconcile, retry_at):
                retry_at = math.inf  # this pass is the retry; a failure sets it again
                reconcile(roots)
                next_reconcile = time.monotonic() + interval_s
            paths = dirty.take_settled()
            if paths:  # a failed run's paths are left to the retrying full pass
                run(partial(index_paths, library, paths, roots, status, settings.settle_s), False)
    finally:
        status.running = False
        watches.stop()
