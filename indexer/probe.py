"""Reading for the batched path: files are read and their JPEG headers parsed ahead of decoding.

Kept free of torch so worker processes start in a blink: many files are probed in worker
processes (open, read and header parsing are per-file Python work that one GIL serialises in
threads); bytes come back with the probe for files up to INLINE_BYTES, and larger files are read
in the indexing process by threads (reads release the GIL).
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pixseek.catalog import FileRow
from pixseek.imaging import ImageError, JpegHeader, Limits, read_jpeg_header
from pixseek.indexer.decode import map_in_chunks, worker_count, worker_pool

PROCESS_READING_FROM = 1024  # files; below this, starting worker processes costs more
PROBE_CHUNK = 64  # files per worker task
INLINE_BYTES = 1 << 20  # files up to this size come back from the worker with their bytes
HEADER_BYTES = 256 << 10  # enough of a larger JPEG for its markers and EXIF


@dataclass
class Item:
    """A file on its way through the batched path."""

    row: FileRow
    data: bytes
    header: JpegHeader


def read_items(
    rows: Sequence[FileRow], limits: Limits, workers: int, window: int
) -> Iterator[Item | FileRow | tuple[FileRow, ImageError]]:
    """Read files and parse their JPEG headers, in order, at most `window` files ahead."""
    probe = partial(probe_files, limits=limits, inline_max=INLINE_BYTES)
    paths = [row.path for row in rows]
    with contextlib.ExitStack() as stack:
        readers = ThreadPoolExecutor(worker_count(workers), thread_name_prefix="pixseek-read")
        stack.enter_context(readers)
        if len(rows) >= PROCESS_READING_FROM:
            pool = stack.enter_context(worker_pool(workers))
            chunks = max(2, window // PROBE_CHUNK)
            probes = map_in_chunks(pool, probe, paths, PROBE_CHUNK, chunks)
        else:
            probes = (found for [found] in readers.map(probe, ([path] for path in paths)))
        pending: deque[tuple[FileRow, Probe, Future | None]] = deque()
        for row, found in zip(rows, probes, strict=True):
            late = readers.submit(Path(row.path).read_bytes) if found[0] == "large" else None
            pending.append((row, found, late))
            if len(pending) >= window:
                yield _item(*pending.popleft())
        while pending:
            yield _item(*pending.popleft())


Probe = tuple[str, object, bytes | None]


def probe_files(paths: list[str], limits: Limits, inline_max: int) -> list[Probe]:
    """For each path: ("jpeg", header, bytes) up to `inline_max` bytes, ("large", header, None)
    above, ("other", None, None) for the CPU path, or ("refused", (reason, retryable), None)."""
    return [_probe(path, limits, inline_max) for path in paths]


def _probe(path: str, limits: Limits, inline_max: int) -> Probe:
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as handle:
            data = handle.read(size if size <= inline_max else HEADER_BYTES)
        header = read_jpeg_header(data, limits, size)
    except ImageError as error:
        return "refused", (error.reason, error.retryable), None
    except OSError:
        return "other", None, None  # the CPU path reports unreadable files with their reason
    if header is None:
        return "other", None, None
    return ("jpeg", header, data) if size <= inline_max else ("large", header, None)


def _item(
    row: FileRow, probe: Probe, late: Future | None
) -> Item | FileRow | tuple[FileRow, ImageError]:
    kind, detail, data = probe
    if kind == "refused":
        reason, retryable = detail
        return row, ImageError(reason, retryable)
    if kind == "other":
        return row
    try:
        return Item(row, late.result() if late is not None else data, detail)
    except OSError:
        return row
