"""One writer per embedded store: an advisory lock file in the data directory.

Chroma's embedded mode is not process-safe, so two indexers on one data directory could corrupt
it. The lock is released by the kernel when its holder exits, even after kill -9.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class StoreLockedError(RuntimeError):
    """Another process is writing to this data directory."""


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
                "finish, or use a Chroma server (store.mode: http) to share one index"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        """Give the lock up."""
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
