"""Commits on their own thread: in order, all of them before the run goes on, errors surfaced."""

from __future__ import annotations

import threading
import time

import pytest

from pixseek.indexer.committer import Committer


def test_every_batch_is_committed_in_order_on_another_thread_before_leaving():
    committed: list[tuple[int, str]] = []

    def commit(batch: int) -> None:
        time.sleep(0.001 * (batch % 3))  # slower than handing over: the queue fills
        committed.append((batch, threading.current_thread().name))

    with Committer(commit) as committer:
        for batch in range(40):
            committer.put(batch)
    assert [batch for batch, _ in committed] == list(range(40))
    assert {name for _, name in committed} == {"pixseek-commit"}


def test_a_failed_commit_is_raised_and_later_batches_are_not_committed():
    committed: list[int] = []

    def commit(batch: int) -> None:
        if batch == 3:
            raise OSError("disk full")
        committed.append(batch)

    with pytest.raises(OSError, match="disk full"), Committer(commit) as committer:
        for batch in range(10):
            committer.put(batch)
            time.sleep(0.01)
    assert committed == [0, 1, 2]
