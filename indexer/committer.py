"""Catalog commits on their own thread, so the thread that feeds the GPU never waits for SQLite.

Batches are committed in the order they were handed over. The queue is short: when commits fall
behind, handing over waits, so memory stays flat. SQLite lets go of the interpreter lock while
it writes, so the commits overlap with reading and decoding rather than taking turns with them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Batch = TypeVar("Batch")
_DEPTH = 8
_END = object()


class Committer(Generic[Batch]):
    """Calls `commit` with each batch put, in order, on its own thread (then `on_thread_end`
    there); use as a context manager: leaving waits for every batch handed over, then re-raises
    a commit's error."""

    def __init__(
        self,
        commit: Callable[[Batch], None],
        on_thread_end: Callable[[], None] = lambda: None,
    ) -> None:
        self._commit = commit
        self._on_thread_end = on_thread_end
        self._queue: queue.Queue = queue.Queue(maxsize=_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pixseek-commit", daemon=True)
        self._thread.start()

    def __enter__(self) -> Committer[Batch]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def put(self, batch: Batch) -> None:
        """Hand a batch over (waits while the queue is full); raises an earlier commit's error."""
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def _run(self) -> None:
        try:
            while (batch := self._queue.get()) is not _END:
                if self._error is None:  # after a failure the rest are drained, not committed
                    try:
                        self._commit(batch)
                    except BaseException as error:  # re-raised on the handing-over thread
                        self._error = error
        finally:
            self._on_thread_end()
