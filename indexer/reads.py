"""Reading files for the batched path: in threads, into reused buffers, headers parsed on the way.

A fresh `bytes` per file costs the kernel a page fault for every 4 KB of it, and freeing it a
TLB flush on every core the process runs on; with several threads reading 2 MB photos that is
most of the reading time. Buffers are taken from a pool by size and given back once a batch is
decoded, so after the first batches a read is a copy from the page cache and nothing more.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np

from pixseek.catalog import FileRow, content_hash_of
from pixseek.imaging import ImageError, JpegHeader, Limits, read_jpeg_header

READ_GROUP = 16
READ_THREADS = 4  # for small files: header parsing holds the GIL, more threads only contend
MAX_READ_THREADS = 16  # big files: hashing them releases the GIL, so more threads keep up
_SMALLEST_BUFFER = 1 << 16
Timer = Callable[[str], AbstractContextManager[object]]  # times a named step


def untimed(_step: str) -> AbstractContextManager[object]:
    """A `Timer` that keeps no time."""
    return nullcontext()


class Buffers:
    """A pool of byte buffers by size class (powers of two), shared by the reading threads.

    Buffers are carved from `arena` while it has room (memory that read processes share, see
    `read_processes`), else allocated privately.
    """

    def __init__(self, arena: np.ndarray | None = None) -> None:
        self._free: dict[int, list[np.ndarray]] = defaultdict(list)
        self._lock = threading.Lock()
        self._arena = arena
        self._carved = 0
        # id of each buffer carved from the arena: the buffer (kept, so no other array can
        # take its id) and where it starts
        self._carved_at: dict[int, tuple[np.ndarray, int]] = {}

    def take(self, size: int) -> np.ndarray:
        """A buffer of at least `size` bytes (its contents are left over from earlier use)."""
        capacity = max(_SMALLEST_BUFFER, 1 << (size - 1).bit_length())
        with self._lock:
            free = self._free[capacity]
            if free:
                return free.pop()
            if self._arena is not None and self._carved + capacity <= len(self._arena):
                buffer = self._arena[self._carved : self._carved + capacity]
                self._carved_at[id(buffer)] = (buffer, self._carved)
                self._carved += capacity
                return buffer
        return np.empty(capacity, dtype=np.uint8)

    def give(self, buffer: np.ndarray) -> None:
        """Return a buffer taken from this pool; nothing may use it afterwards."""
        with self._lock:
            self._free[len(buffer)].append(buffer)

    def offset(self, buffer: np.ndarray) -> int | None:
        """Where a buffer from `take` starts in the arena; None for a buffer of its own. (A
        lookup by id is some 30 times cheaper than reading two arrays' addresses, and it is
        made twice per file.)"""
        carved = self._carved_at.get(id(buffer))
        return carved[1] if carved is not None else None


@dataclass
class Item:
    """A file on its way through the batched path: its row, its bytes (a view of a pooled
    buffer, given back with `release` once decoded) and its header."""

    row: FileRow
    data: np.ndarray
    header: JpegHeader
    buffer: np.ndarray
    buffers: Buffers

    def release(self) -> None:
        """Give the bytes' buffer back to the pool."""
        self.buffers.give(self.buffer)


def read_items(
    rows: Iterable[FileRow],
    limits: Limits,
    threads: int,
    window: int,
    timed: Timer = untimed,
    buffers: Buffers | None = None,
) -> Iterator[Item | FileRow | tuple[FileRow, ImageError]]:
    """Read files and parse JPEG headers in threads, in order, at most about `window` ahead.

    Threads take `READ_GROUP` files at a time: one task per file costs more in hand-offs than
    reading a small file does. Rows come back as they are when the batched path can't take
    them (unreadable, not a plain JPEG), or with the error that refuses them.
    """
    buffers = buffers or Buffers()
    with ThreadPoolExecutor(threads, thread_name_prefix="pixseek-read") as pool:
        pending: deque[Future] = deque()

        def next_group() -> list[Item | FileRow | tuple[FileRow, ImageError]]:
            with timed("read_wait"):
                return pending.popleft().result()

        for group in groups(rows, READ_GROUP):
            pending.append(pool.submit(_read_group, group, limits, buffers))
            if len(pending) * READ_GROUP >= window:
                yield from next_group()
        while pending:
            yield from next_group()


def read_threads(rows: Sequence[FileRow], cores: int) -> int:
    """Threads that read (and, for new files, hash) `rows`: 4, plus one per 0.5 MB of the
    average file still to hash. On an H100 host, 8 threads instead of 4 kept up with 12 MP
    photos of 1.8 MB (4 left the lanes waiting 4.2 s for reads out of a 4.9 s run) and made
    640x480 ones of 150 KB 16% slower."""
    unhashed = [row.size for row in rows if row.content_hash is None]
    extra = round(sum(unhashed) / max(1, len(unhashed)) / 500_000)
    return max(1, min(cores, READ_THREADS + extra, MAX_READ_THREADS))


def groups(rows: Iterable[FileRow], size: int) -> Iterator[list[FileRow]]:
    """`rows` in lists of `size` (the last may be shorter)."""
    group: list[FileRow] = []
    for row in rows:
        group.append(row)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _read_group(
    rows: list[FileRow], limits: Limits, buffers: Buffers
) -> list[Item | FileRow | tuple[FileRow, ImageError]]:
    return [read_one(row, limits, buffers) for row in rows]


def read_one(
    row: FileRow, limits: Limits, buffers: Buffers
) -> Item | FileRow | tuple[FileRow, ImageError]:
    """A file's bytes and header; rows the plan left unhashed get their content hash here."""
    try:
        read = _read_into(row.path, buffers)
    except OSError:
        return row  # the CPU path reports unreadable files with their reason
    if read is None:
        return row  # it changed while being read: the CPU path reads it as it is then
    buffer, data = read
    if row.content_hash is None:
        row = row.with_hash(content_hash_of(data))
    try:
        header = read_jpeg_header(memoryview(data), limits)
    except ImageError as error:
        buffers.give(buffer)
        return row, error
    if header is None:
        buffers.give(buffer)
        return row
    return Item(row, data, header, buffer, buffers)


def _read_into(path: str, buffers: Buffers) -> tuple[np.ndarray, np.ndarray] | None:
    """The file's bytes in a pooled buffer: (the buffer, a view of the bytes read), or None for
    a file whose size changed while it was read."""
    descriptor = open_for_reading(path)
    try:
        size = os.fstat(descriptor).st_size
        buffer = buffers.take(size + 1)  # room for more than `size` shows a file that grew
        try:
            length = read_fully(descriptor, buffer, size)
        except BaseException:
            buffers.give(buffer)
            raise
    finally:
        os.close(descriptor)
    if length != size:
        buffers.give(buffer)
        return None
    return buffer, buffer[:length]


def open_for_reading(path: str) -> int:
    """A raw descriptor for reading `path` (closed on exec)."""
    return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))


def read_fully(descriptor: int, buffer: np.ndarray, size: int) -> int:
    """Read a file of `size` bytes into `buffer` (longer than that, to show a file that grew);
    how many bytes were read. One `readv` reads a whole file, a few µs less than Python's file
    objects."""
    length = os.readv(descriptor, [buffer])
    while 0 < length < size and (got := os.readv(descriptor, [buffer[length:]])):
        length += got  # a short read: the rest
    return length
