"""Chroma writes on their own thread, so embedding never waits for the vector store.

Rows reach Chroma from the catalog's embedding cache after they are committed there; a crash
before they are published is repaired at the next start from that cache. Writes keep the order
they were asked in (a delete and a later upsert of the same id stay in that order) and are grouped
into batches of the client's maximum size, and a row waits at most `_FLUSH_AFTER_S` even while
batches keep coming, so a long run is searchable as it goes.

Chroma's client holds the interpreter lock while it writes, which would stall whatever else the
indexing process does, so during a bulk run (`bulk()`) writes are gathered for up to
`_BULK_FLUSH_AFTER_S` and done in large steps, and they catch up from the cache at the end.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pixseek.catalog import FileRow
from pixseek.library import Library

_FLUSH_AFTER_S = 0.5
_BULK_FLUSH_AFTER_S = 60.0
_BULK_ROWS = 100_000


class Publisher:
    """A background writer to the store; use as a context manager (leaving waits for it)."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self._queue: queue.Queue[tuple[str, Sequence] | None] = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self._flush_after_s, self._full_rows = _FLUSH_AFTER_S, library.store.batch_size
        self._thread = threading.Thread(target=self._run, name="pixseek-publisher", daemon=True)
        self._thread.start()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def upsert(self, rows: Sequence[FileRow]) -> None:
        """Publish rows whose vectors are in the catalog's cache."""
        if rows:
            self._put(("upsert", list(rows)))

    def delete(self, ids: Sequence[str]) -> None:
        """Remove records."""
        if ids:
            self._put(("delete", list(ids)))

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Write in large, infrequent steps while the block runs (then as usual)."""
        self._flush_after_s, self._full_rows = _BULK_FLUSH_AFTER_S, _BULK_ROWS
        try:
            yield
        finally:
            self._flush_after_s, self._full_rows = _FLUSH_AFTER_S, self.library.store.batch_size
            self._queue.put(("flush", ()))

    def close(self) -> None:
        """Wait until everything asked for is written; re-raise a write error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _put(self, item: tuple[str, Sequence]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def _run(self) -> None:
        pending: list[FileRow] = []
        due = 0.0  # when the oldest pending row must be in Chroma
        closing = False
        try:
            while True:
                wait = max(due - time.monotonic(), 0.0) if pending else None
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    item = ("flush", ())
                if item is None:
                    closing = True
                    break
                kind, payload = item
                if kind == "upsert":
                    if not pending:
                        due = time.monotonic() + self._flush_after_s
                    pending.extend(payload)
                    full = len(pending) >= self._full_rows
                    if not full and time.monotonic() < due:
                        continue
                self._flush(pending)
                pending = []
                if kind == "delete":
                    self.library.store.delete(payload)
            self._flush(pending)
        except BaseException as error:  # surfaced to the indexing thread by close()
            self._error = error
            if not closing:  # take what is still asked for, up to close()'s stop
                self._drain()
        finally:
            self.library.catalog.release_thread()

    def _flush(self, rows: list[FileRow]) -> None:
        if rows:
            self.library.publish(rows)

    def _drain(self) -> None:
        while self._queue.get() is not None:
            pass
