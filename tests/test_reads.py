"""The batched path's readers: pooled buffers hold each file's own bytes, whatever came before."""

from __future__ import annotations

import functools
import io
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixseek.catalog import FileRow, content_hash
from pixseek.config import load_config
from pixseek.imaging import ImageError, Limits
from pixseek.indexer.read_processes import (
    MIN_FILES,
    ReadProcesses,
    start_early,
    start_read_processes,
)
from pixseek.indexer.reads import Buffers, Item, read_items
from tests.test_parity import LIMITS, photo_like


def _row(path: Path) -> FileRow:
    return FileRow(
        id=path.name,
        root=str(path.parent),
        rel_path=path.name,
        path=str(path),
        size=path.stat().st_size if path.exists() else 0,
        mtime_ns=0,
        content_hash=None,
        status="pending",
    )


def _jpeg(width: int, height: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    photo_like(width, height).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """JPEGs of many sizes (so buffers are reused by shorter files), a PNG and a missing file."""
    paths = []
    for number, (width, height) in enumerate([(900, 700), (64, 48), (640, 480), (120, 90)] * 4):
        path = tmp_path / f"img_{number:02d}.jpg"
        path.write_bytes(_jpeg(width, height, 60 + 2 * number))
        paths.append(path)
    Image.new("RGB", (32, 32)).save(tmp_path / "flat.png")
    return [*paths, tmp_path / "flat.png", tmp_path / "gone.jpg"]


Results = list[Item | FileRow | tuple[FileRow, ImageError]]


@pytest.fixture(params=["threads", "processes"])
def reader(request) -> Iterator[Callable[[Limits], Callable[[list[FileRow]], Results]]]:
    """Readers as the batched path has them, by limits: threads, or read processes; each keeps
    one pool of buffers, so buffers change hands between calls."""
    with ExitStack() as stack:

        @functools.cache
        def make(limits: Limits) -> Callable[[list[FileRow]], Results]:
            if request.param == "threads":
                buffers = Buffers()
                return lambda rows: list(read_items(rows, limits, 3, 8, buffers=buffers))
            readers = stack.enter_context(ReadProcesses(2, limits))
            return lambda rows: list(readers.read_items(rows, 8))

        yield make


def test_reused_buffers_hold_each_files_own_bytes(files, reader):
    read = reader(LIMITS)
    for order in (files, files[::-1], files[1::2] + files[::2]):  # buffers change hands
        results = read([_row(path) for path in order])
        assert len(results) == len(order)
        items = [result for result in results if isinstance(result, Item)]
        assert {Path(item.row.path) for item in items} == {
            p for p in order if p.suffix == ".jpg" and p.exists()
        }
        for item in items:
            assert item.data.tobytes() == Path(item.row.path).read_bytes()
            assert item.row.content_hash == content_hash(item.row.path)
        left = [result for result in results if isinstance(result, FileRow)]
        assert {Path(row.path).name for row in left} == {"flat.png", "gone.jpg"}
        for item in items:
            item.release()


def test_a_file_longer_than_its_size_is_left_to_the_cpu_path(reader):
    """/proc files say they are empty and then give bytes: as a file that grew while read."""
    growing = Path("/proc/kallsyms")
    try:
        assert growing.stat().st_size == 0 and len(growing.read_bytes()) > 1 << 16
    except (OSError, AssertionError):
        pytest.skip("needs a readable /proc/kallsyms (size 0, over 64 KB of text)")
    row = _row(growing)
    assert reader(LIMITS)([row]) == [row]


def test_refused_files_come_back_with_the_reason(tmp_path, reader):
    path = tmp_path / "huge.jpg"
    path.write_bytes(_jpeg(640, 480, 90))
    small = type(LIMITS)(max_bytes=1000, max_pixels=LIMITS.max_pixels)
    [(row, error)] = reader(small)([_row(path)])
    assert row.path == str(path) and isinstance(error, ImageError)
    assert "max_file_mb" in error.reason


def test_files_grown_since_the_scan_are_left_to_the_cpu_path(tmp_path, files):
    """Read processes get a buffer sized by the scan: a file grown past it is not cut short."""
    grown = tmp_path / "grown.jpg"
    grown.write_bytes(_jpeg(1600, 1200, 95))
    assert grown.stat().st_size > 1 << 16  # past the smallest buffer
    rows = [replace(_row(grown), size=1000), _row(files[0]), _row(files[1])]
    with ReadProcesses(1, LIMITS) as readers:
        results = list(readers.read_items(rows, 8))
    assert results[0] == rows[0]
    for item in results[1:]:
        assert isinstance(item, Item) and item.data.tobytes() == Path(item.row.path).read_bytes()


def test_files_are_read_here_when_read_processes_stop_or_shared_memory_runs_out(files):
    jpegs = [path for path in files if path.suffix == ".jpg" and path.exists()]
    rows = [_row(path) for path in jpegs] * 4
    with ReadProcesses(2, LIMITS, arena_bytes=1 << 18) as readers:
        results = list(readers.read_items(rows[:24], 8))  # the arena holds 4 buffers at most
        for pid in readers.pids:
            os.kill(pid, signal.SIGKILL)
        results += list(readers.read_items(rows[24:], 8))
    assert [item.row.path for item in results] == [row.path for row in rows]
    for item in results:
        assert isinstance(item, Item) and item.data.tobytes() == Path(item.row.path).read_bytes()
        assert item.row.content_hash == content_hash(item.row.path)


def test_read_processes_start_for_large_runs_only_unless_asked():
    assert start_read_processes(5000, 4, "threads", LIMITS) is None
    assert start_read_processes(MIN_FILES - 1, 4, "auto", LIMITS) is None
    for files, readers in ((MIN_FILES, "auto"), (1, "processes")):
        started = start_read_processes(files, 2, readers, LIMITS)
        assert started is not None
        with started:
            assert len(started.pids) == 2


def test_read_processes_started_early_serve_a_large_batched_run_and_end_for_others(tmp_path):
    """`pixseek index` starts them before importing torch, when its run could use them."""

    def early(**indexer: object) -> ReadProcesses | None:
        overrides = {"data_dir": str(tmp_path), "model": {"device": "cpu"}, "indexer": indexer}
        return start_early(load_config(None, overrides).settings)

    assert early(decode="batched", readers="threads") is None
    assert early(decode="workers", readers="processes") is None
    assert early(decode="auto", readers="processes") is None  # a CPU model: decode workers

    started = early(decode="batched", readers="auto", workers=2)
    assert started is not None
    with started:
        assert len(started.pids) == 2
        assert start_read_processes(MIN_FILES, 4, "auto", LIMITS, started) is started

    small = early(decode="batched", readers="auto", workers=1)
    assert small is not None
    assert start_read_processes(MIN_FILES - 1, 4, "auto", LIMITS, small) is None
    assert not any(Path(f"/proc/{pid}").exists() for pid in small.pids), "ended, not left over"


def test_a_wide_read_window_never_stalls_the_read_processes(tmp_path):
    """A run with large model batches reads far ahead (twice the batch): the read processes'
    answers must not pile up in their pipes while this process is still sending them files,
    or both sides wait for each other for ever."""
    folder = tmp_path / ("long-folder-name-" * 12)
    folder.mkdir()
    jpeg = folder / "photo.jpg"
    jpeg.write_bytes(_jpeg(64, 48, 80))
    rows = [replace(_row(jpeg), id=f"r{number}") for number in range(4096)]
    results: list = []
    with ReadProcesses(1, LIMITS) as readers:
        reading = threading.Thread(
            target=lambda: results.extend(readers.read_items(rows, 2 * 2048)), daemon=True
        )
        reading.start()
        reading.join(timeout=60)
        stalled = reading.is_alive()
        if stalled:  # end the read process, so the reading thread can end too
            os.kill(readers.pids[0], signal.SIGKILL)
            reading.join(timeout=30)
    assert not stalled, "reading stalled"
    assert len(results) == len(rows)
    assert all(isinstance(item, Item) for item in results)


def test_each_buffer_knows_its_own_place_in_the_arena():
    """Read processes write a file where `offset` says its buffer starts: the place must be the
    buffer's own, also for buffers given back and taken again, and a buffer of its own (the
    arena full) has none, even after carved buffers are dropped by their users."""
    arena = np.zeros(4 << 16, dtype=np.uint8)
    buffers = Buffers(arena)
    carved = [buffers.take(1 << 16) for _ in range(4)]
    private = buffers.take(1 << 16)
    assert buffers.offset(private) is None
    for number, buffer in enumerate(carved):
        buffer[:] = number + 1
        start = buffers.offset(buffer)
        assert start is not None and (arena[start : start + len(buffer)] == number + 1).all()
    buffers.give(carved[0])
    buffers.give(carved[1])
    del carved, buffer  # two of them never given back
    fresh = [np.empty(1 << 16, dtype=np.uint8) for _ in range(64)]  # may take freed ids
    assert all(buffers.offset(buffer) is None for buffer in fresh)
    again = [buffers.take(1 << 16) for _ in range(2)]
    assert sorted(buffers.offset(buffer) for buffer in again) == [0, 1 << 16]
