"""Reading files for the batched path in processes of their own, into memory shared with them.

With threads, reading, hashing and parsing headers holds the indexing process's interpreter lock
for tens of µs a file, which the threads that drive the GPU then wait for. Read processes do
that work with interpreters of their own: the indexing process picks a buffer for each file in
an arena both sides map (an anonymous `memfd`, sparse, so untouched room costs nothing), sends
the paths, and gets back per file its length, content hash and JPEG header. A file that does
not fit its buffer (it grew since the scan), an arena that is full or a read process that died
falls back to reading in this process, so nothing is lost. Decode processes (see
`decode_processes`) start with the read processes, where wanted, and decode from the same arena.

Run as `python -m pixseek.indexer.read_processes FD` it is one read process: it maps the arena
from the inherited descriptor FD and answers groups of files from stdin on stdout (pickles).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np

from pixseek.catalog import FileRow, content_hash_of
from pixseek.imaging import ImageError, JpegHeader, Limits, read_jpeg_header
from pixseek.indexer.decode_processes import DecodeProcess, gpu_decoder_kinds
from pixseek.indexer.reads import (
    READ_GROUP,
    Buffers,
    Item,
    Timer,
    groups,
    open_for_reading,
    read_fully,
    read_one,
    untimed,
)

if TYPE_CHECKING:
    from pixseek.config import ModelSettings, Settings

log = logging.getLogger(__name__)

ARENA_BYTES = 4 << 30  # address space, not memory: only buffers in use are ever touched
MAX_READ_PROCESSES = 8
MIN_FILES = 1024  # smaller runs (a watcher's) read in threads: starting processes costs ~0.3 s

Entry = tuple[str, int, int, bool]  # path, offset in the arena, room there, whether to hash
# What a read process answers per file: None for a file to leave to the CPU path,
# (reason, retryable) for one the header refuses, else (length, hash or None, header fields).
Answer = tuple[int, str | None, tuple] | tuple[str, bool] | None


def start_read_processes(
    files: int, cores: int, readers: str, limits: Limits, early: ReadProcesses | None = None
) -> ReadProcesses | None:
    """Read processes for a run of about `files` files (`indexer.readers`), or None, so threads
    read: for `threads`, for small runs with `auto`, and where the system has no anonymous shared
    memory. One per core, up to `MAX_READ_PROCESSES`. Processes started `early` (as the command
    began) are used if the run wants read processes and ended if it does not."""
    if readers == "threads" or (readers == "auto" and files < MIN_FILES):
        if early is not None:
            early.close()
        return None
    return early or _start_read_processes(cores, limits)


def start_early(settings: Settings) -> ReadProcesses | None:
    """Read processes started as an indexing command begins, before it imports torch and loads
    the model: each takes a few tenths of a second (on some machines over a second) to import
    what it needs, and this way they have done so before the run's first files are read. None
    where the run would read in threads anyway: read threads asked for, decoding by the CPU
    workers, or no NVIDIA GPU to be seen (`/dev/nvidiactl`). `start_read_processes` then keeps
    them for a large batched run, and ends them otherwise."""
    indexer = settings.indexer
    if indexer.readers == "threads" or indexer.decode == "workers":
        return None
    on_gpu = settings.model.device != "cpu" and os.path.exists("/dev/nvidiactl")
    if indexer.decode == "auto" and not on_gpu:
        return None
    from pixseek.indexer.decode import worker_count  # not imported by the read processes

    decoders = _decoders(settings, on_gpu)
    return _start_read_processes(worker_count(indexer.workers), Limits.of(indexer), decoders)


def _decoders(settings: Settings, on_gpu: bool) -> list[tuple[str, str]]:
    """(device, decoder) of each decode process to start (`indexer.decode_processes`): two for
    the first GPU of `model.device` where a GPU decoder is installed; one with Pillow on the
    CPU where asked for (`on`) and no GPU is used."""
    wanted = settings.indexer.decode_processes
    if wanted == "off":
        return []
    if not on_gpu:
        return [("cpu", "pillow")] if wanted == "on" else []
    device = settings.model.device
    device = device if device.startswith("cuda:") else "cuda:0"
    return [(device, kind) for kind in gpu_decoder_kinds(settings.indexer.gpu_decoder)]


def _start_read_processes(
    cores: int, limits: Limits, decoders: Sequence[tuple[str, str]] = ()
) -> ReadProcesses | None:
    try:
        return ReadProcesses(max(1, min(cores, MAX_READ_PROCESSES)), limits, decoders=decoders)
    except (OSError, AttributeError) as error:  # no memfd here: threads read instead
        log.warning("read processes unavailable (%s); reading in threads", error)
        return None


@dataclass
class _Worker:
    process: subprocess.Popen
    tasks: IO[bytes]
    answers: IO[bytes]
    alive: bool = True


class ReadProcesses:
    """Read processes sharing an arena of buffers with this one, and the decode processes that
    decode from it (`decoders`: (device, decoder) each); a context manager that ends them all.
    `read_items` reads files as `reads.read_items` does, in the same order."""

    def __init__(
        self,
        count: int,
        limits: Limits,
        arena_bytes: int = ARENA_BYTES,
        decoders: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.limits = limits
        self._workers: list[_Worker] = []
        self.decoding: list[DecodeProcess] = []
        self._turn = 0
        descriptor = os.memfd_create("pixseek-reads", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.ftruncate(descriptor, arena_bytes)
            self.buffers = Buffers(np.frombuffer(mmap.mmap(descriptor, arena_bytes), np.uint8))
            for device, decoder in decoders:  # first: they have the most to start
                self.decoding.append(DecodeProcess(descriptor, device, decoder))
            for _ in range(count):
                self._workers.append(self._start(descriptor))
        except BaseException:
            self.close()  # the ones that did start
            raise
        finally:
            os.close(descriptor)

    def _start(self, descriptor: int) -> _Worker:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(descriptor)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(descriptor,),
        )
        assert process.stdin is not None and process.stdout is not None
        worker = _Worker(process, process.stdin, process.stdout)
        self._send(worker, self.limits)
        return worker

    def configure_decoding(self, model: ModelSettings) -> None:
        """Have the decode processes make their rings for `model` now, before the run needs
        them (a model whose geometry cannot be read is left for the run to report)."""
        import torch

        from pixseek.embedder import MODEL_FILE_ERRORS, image_geometry, resolve_batch_size

        try:
            spec = image_geometry(model.name)
        except MODEL_FILE_ERRORS:
            return
        for decoding in self.decoding:
            decoding.configure(
                spec, resolve_batch_size(model.batch_size, torch.device(decoding.device))
            )

    @property
    def pids(self) -> list[int]:
        """The read processes' ids."""
        return [worker.process.pid for worker in self._workers]

    def __enter__(self) -> ReadProcesses:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the read processes (each finishes the group it is reading) and decode processes."""
        for decoding in self.decoding:
            decoding.close()
        for worker in self._workers:
            for pipe in (worker.tasks, worker.answers):
                with contextlib.suppress(OSError):  # it had gone already
                    pipe.close()
        for worker in self._workers:
            try:
                worker.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()

    def read_items(
        self, rows: Iterable[FileRow], window: int, timed: Timer = untimed
    ) -> Iterator[Item | FileRow | tuple[FileRow, ImageError]]:
        """Read files and parse JPEG headers in the read processes, in order, at most about
        `window` files ahead; what comes back is what `reads.read_items` gives."""
        pending: deque[tuple[_Worker | None, list[FileRow], list[np.ndarray]]] = deque()
        for group in groups(rows, READ_GROUP):
            pending.append(self._submit(group))
            if len(pending) * READ_GROUP >= window:
                yield from self._collect(*pending.popleft(), timed)
        while pending:
            yield from self._collect(*pending.popleft(), timed)

    def _submit(
        self, rows: list[FileRow]
    ) -> tuple[_Worker | None, list[FileRow], list[np.ndarray]]:
        """Send a group to the next live read process, each file with a buffer picked for it."""
        buffers = [self.buffers.take(row.size + 1) for row in rows]
        offsets = [self.buffers.offset(buffer) for buffer in buffers]
        worker = self._next_worker()
        if worker is None or None in offsets:  # no process left, or the arena is full
            return None, rows, buffers
        entries: list[Entry] = [
            (row.path, offset, len(buffer), row.content_hash is None)
            for row, offset, buffer in zip(rows, offsets, buffers, strict=True)
        ]
        if not self._send(worker, entries):
            return None, rows, buffers
        return worker, rows, buffers

    def _next_worker(self) -> _Worker | None:
        for _ in range(len(self._workers)):
            worker = self._workers[self._turn % len(self._workers)]
            self._turn += 1
            if worker.alive:
                return worker
        return None

    def _send(self, worker: _Worker, message: object) -> bool:
        try:
            pickle.dump(message, worker.tasks, pickle.HIGHEST_PROTOCOL)
            worker.tasks.flush()
            return True
        except OSError as error:
            self._lost(worker, error)
            return False

    def _lost(self, worker: _Worker, error: BaseException) -> None:
        if worker.alive:
            log.warning("a read process stopped (%r); this process reads its files", error)
            worker.alive = False

    def _collect(
        self, worker: _Worker | None, rows: list[FileRow], buffers: list[np.ndarray], timed: Timer
    ) -> Iterator[Item | FileRow | tuple[FileRow, ImageError]]:
        answers: list[Answer] | None = None
        if worker is not None:
            with timed("read_wait"):
                try:
                    answers = pickle.load(worker.answers)
                except (OSError, EOFError, pickle.UnpicklingError) as error:
                    self._lost(worker, error)
        if answers is None:  # read here instead
            for row, buffer in zip(rows, buffers, strict=True):
                self.buffers.give(buffer)
                yield read_one(row, self.limits, self.buffers)
            return
        for row, buffer, answer in zip(rows, buffers, answers, strict=True):
            yield self._item(row, buffer, answer)

    def _item(
        self, row: FileRow, buffer: np.ndarray, answer: Answer
    ) -> Item | FileRow | tuple[FileRow, ImageError]:
        if answer is None or len(answer) == 2:
            self.buffers.give(buffer)
            return row if answer is None else (row, ImageError(*answer))
        length, digest, header = answer
        if digest is not None:
            row = row.with_hash(digest)
        return Item(row, buffer[:length], JpegHeader(*header), buffer, self.buffers)


def _answer(arena: np.ndarray, limits: Limits, entry: Entry) -> Answer:
    """Read one file into its place in the arena (the read process's side)."""
    path, offset, room, hash_it = entry
    buffer = arena[offset : offset + room]
    try:
        descriptor = open_for_reading(path)
        try:
            size = os.fstat(descriptor).st_size
            if size >= room:
                return None  # it grew since the scan: the CPU path reads it as it is
            if read_fully(descriptor, buffer, size) != size:
                return None  # it changed while being read
        finally:
            os.close(descriptor)
    except OSError:
        return None  # the CPU path reports unreadable files with their reason
    data = buffer[:size]
    digest = content_hash_of(data) if hash_it else None
    try:
        header = read_jpeg_header(memoryview(data), limits)
    except ImageError as error:
        return error.reason, error.retryable
    if header is None:
        return None
    fields = (header.width, header.height, header.orientation)
    return size, digest, (*fields, header.taken_at, header.camera, header.format)


def serve(descriptor: int) -> None:
    """One read process: answer groups of files from stdin until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the indexing process decides when to stop
    arena = np.frombuffer(mmap.mmap(descriptor, os.fstat(descriptor).st_size), np.uint8)
    os.close(descriptor)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print can't corrupt the answers
    tasks = sys.stdin.buffer
    limits: Limits = pickle.load(tasks)
    taken: queue.SimpleQueue[list[Entry] | None] = queue.SimpleQueue()
    threading.Thread(target=_take_tasks, args=(tasks, taken), daemon=True).start()
    try:
        while (entries := taken.get()) is not None:
            pickle.dump([_answer(arena, limits, e) for e in entries], answers, -1)
            answers.flush()
    except BrokenPipeError:
        return  # the indexing process stopped reading: it is ending the run


def _take_tasks(tasks: IO[bytes], taken: queue.SimpleQueue) -> None:
    """Take every group as soon as it is sent (None at the end). Were groups taken only between
    answers, a long read-ahead would fill both pipes: this process waiting to send answers
    that the indexing process, itself waiting to send more groups, has not yet asked for."""
    try:
        while True:
            taken.put(pickle.load(tasks))
    except (EOFError, OSError, pickle.UnpicklingError):
        taken.put(None)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
