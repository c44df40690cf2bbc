"""One writer per data directory (an advisory lock file) and one catalog per collection.

Chroma's embedded mode is not process-safe, and two indexers planning from one catalog would
embed and delete at cross purposes, so a data directory has one writer in every store mode. The
lock is released by the kernel when its holder exits, even after kill -9. A Chroma collection,
embedded or on a server, is written from one catalog only (see `Store.claim`), because each
catalog's repair removes the records it does not hold.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StoreLockedError(RuntimeError):
    """Another process is writing to this data directory."""


class StoreOwnedError(StoreLockedError):
    """The collection is written from another catalog."""


class WriterLock:
    """Hold `<data_dir>/writer.lock` for the life of this object (or until `release`)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "writer.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StoreLockedError(
                f"{data_dir} is in use by another pixseek process (pid {owner}); wait for it to "
                "finish, or search through it meanwhile: `--server URL`, or, with a Chroma "
                "server (store.mode: http), a web-only `pixseek serve --no-index`"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Give the lock up."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
