"""Filesystem observers over the library roots: native (inotify) or polling, per-root state.

When the kernel refuses more inotify instances (EMFILE) or watches (ENOSPC), the error is
reported with the sysctl that lifts the limit and watching goes on by polling. A root that
disappears (an unmounted share) is no longer watched until it comes back.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from pixseek.config import WatchSettings

log = logging.getLogger(__name__)
INOTIFY_LIMITS = {
    errno.EMFILE: ("max_user_instances", 1024),
    errno.ENOSPC: ("max_user_watches", 524288),
}
WATCHING, POLLING, MISSING, OFF = "watching", "polling", "missing", "off"


def inotify_hint(error: OSError) -> str:
    """What hit the limit and the sysctl that raises it."""
    name, suggested = INOTIFY_LIMITS[error.errno or 0]
    current = Path(f"/proc/sys/fs/inotify/{name}")
    now = current.read_text().strip() if current.exists() else "?"
    return (
        f"inotify limit reached ({error.strerror or error}; fs.inotify.{name} is {now}): "
        f"raise it with `sudo sysctl fs.inotify.{name}={suggested}` (persist it in "
        "/etc/sysctl.d/); watching by polling meanwhile"
    )


class RootWatches:
    """One observer over all roots; `states()` says how each root is watched."""

    def __init__(
        self, roots: Sequence[str], settings: WatchSettings, handler: FileSystemEventHandler
    ) -> None:
        self.roots = list(roots)
        self.settings = settings
        self.handler = handler
        self.kind = settings.observer
        self.notes: list[str] = []
        self.observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}

    def start(self) -> None:
        """Start watching every existing root (a no-op when the observer is `off`)."""
        if self.kind == "off":
            return
        try:
            self.observer = Observer() if self.kind == "native" else self._polling()
            self._schedule_present()
            self.observer.start()
        except OSError as error:
            self._fall_back(error)

    def refresh(self) -> tuple[list[str], list[str]]:
        """Follow roots that vanished or came back: returns (gone, back)."""
        gone: list[str] = []
        back: list[str] = []
        if self.observer is None:
            return gone, back
        for root in self.roots:
            present = os.path.isdir(root)
            if root in self._watches and not present:
                self.observer.unschedule(self._watches.pop(root))
                gone.append(root)
            elif root not in self._watches and present:
                back.append(root)
        try:
            self._schedule_present()
        except OSError as error:
            self._fall_back(error)
        return gone, back

    def take_notes(self) -> list[str]:
        """Messages since the last call (an inotify limit and its fix)."""
        notes, self.notes = self.notes, []
        return notes

    def states(self) -> dict[str, str]:
        """Per root: watching (native), polling, missing, or off."""
        return {root: self._state(root) for root in self.roots}

    def _state(self, root: str) -> str:
        if not os.path.isdir(root):
            return MISSING
        if self.observer is None or root not in self._watches:
            return OFF
        return POLLING if self.kind == "polling" else WATCHING

    def stop(self) -> None:
        """Stop the observer (also one that failed to start) and its threads."""
        if self.observer is not None:
            self.observer.stop()
            if self.observer.is_alive():
                self.observer.join(timeout=10)

    def _polling(self) -> PollingObserver:
        return PollingObserver(timeout=self.settings.poll_interval_s)

    def _schedule_present(self) -> None:
        assert self.observer is not None
        for root in self.roots:
            if root not in self._watches and os.path.isdir(root):
                self._watches[root] = self.observer.schedule(self.handler, root, recursive=True)

    def _fall_back(self, error: OSError) -> None:
        if error.errno not in INOTIFY_LIMITS or self.kind != "native":
            raise error
        hint = inotify_hint(error)
        log.warning(hint)
        self.notes.append(hint)
        self.stop()
        self.kind, self._watches = "polling", {}
        self.observer = self._polling()
        self._schedule_present()
        self.observer.start()
