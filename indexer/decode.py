"""Decode workers: separate processes, so a file that crashes the decoder only costs that file.

Results come back in submission order with a bounded number in flight, which keeps memory flat
whatever the size of the library.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pixseek.imaging import ImageError, Limits, PreparedImage, PreprocessSpec, prepare_image

Job = TypeVar("Job")


@dataclass(frozen=True)
class DecodeFailure:
    """Why a file could not be decoded; `retryable` when a later run may succeed."""

    reason: str
    retryable: bool = False


def decode_file(path: str, limits: Limits, spec: PreprocessSpec) -> PreparedImage | DecodeFailure:
    """Worker entry point: never raises for a bad file."""
    try:
        return prepare_image(Path(path), limits, spec)
    except ImageError as error:
        return DecodeFailure(error.reason, error.retryable)
    except Exception as error:  # a decoder bug must not lose the rest of the run
        return DecodeFailure(f"cannot decode: {type(error).__name__}: {error}")


def _exit_with(owner: int) -> None:
    """Worker initializer: leave when the indexing process is gone (even after kill -9)."""

    def watch_owner() -> None:
        while True:
            time.sleep(1)
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch_owner, daemon=True).start()


def worker_count(configured: int) -> int:
    """`0` means one worker per CPU core."""
    return configured or os.cpu_count() or 1


class DecodePool(Generic[Job]):
    """A process pool that survives workers dying; use as a context manager."""

    def __init__(self, workers: int, limits: Limits, spec: PreprocessSpec, in_flight: int) -> None:
        self.workers = worker_count(workers)
        self.limits, self.spec = limits, spec
        self.in_flight = max(in_flight, self.workers)
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["pixseek.imaging"])
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=_exit_with,
            initargs=(os.getpid(),),
        )

    def __enter__(self) -> DecodePool[Job]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def decode(
        self, jobs: Iterable[tuple[Job, str]]
    ) -> Iterator[tuple[Job, PreparedImage | DecodeFailure]]:
        """Decode (job, path) pairs; yields (job, result) in the order given."""
        window: deque[tuple[Job, str, Future]] = deque()
        for job, path in jobs:
            window.append((job, path, self._submit(path)))
            if len(window) >= self.in_flight:
                yield from self._collect(window, 1)
        yield from self._collect(window, len(window))

    def _submit(self, path: str) -> Future:
        try:
            return self._pool.submit(decode_file, path, self.limits, self.spec)
        except BrokenProcessPool:
            self._restart()
            return self._pool.submit(decode_file, path, self.limits, self.spec)

    def _collect(self, window: deque, count: int) -> Iterator[tuple[Job, object]]:
        for _ in range(count):
            job, path, future = window.popleft()
            try:
                yield job, future.result()
            except BrokenProcessPool:
                window.appendleft((job, path, future))
                yield from self._isolate(window)
                return

    def _isolate(self, window: deque) -> Iterator[tuple[Job, object]]:
        """The pool died: rerun everything that was in flight one file at a time."""
        suspects = list(window)
        window.clear()
        self._restart()
        for job, path, _ in suspects:
            try:
                yield job, self._pool.submit(decode_file, path, self.limits, self.spec).result()
            except BrokenProcessPool:
                self._restart()
                yield job, DecodeFailure("the decoder process crashed on this file")

    def _restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
