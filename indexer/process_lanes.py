"""A lane whose decoding and resizing happen in a decode process (see `decode_processes`).

Two threads serve it here: one sends each batch's places in the read arena to the decode
process, the other takes back which slot of the shared ring holds the batch's crops, copies them
out, gives the slot back and runs the model on what has gathered (several of the decode
process's batches at 12 MP, where a batch is cut at 42 photos). At most the ring's slots plus
one batch are in the decode process at a time. While the model still loads, crops are held (as
`batched.Lane` holds them). If the decode process fails or dies, the batches it held, and
every batch after, come back as leftovers for the CPU decode workers: nothing is lost.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

from pixseek.indexer.decode_processes import RING_SLOTS, DecodeProcess, Entry
from pixseek.indexer.lane_models import LANE_DONE, HeldBatches, LaneModel
from pixseek.indexer.reads import Item, Timer, untimed

log = logging.getLogger(__name__)
_STOP = object()


def same_device(decoding: DecodeProcess, device: torch.device) -> bool:
    """Whether a decode process works on `device` (`cuda` and `cuda:0` are the same GPU)."""
    own = torch.device(decoding.device)
    return own.type == device.type and (own.index or 0) == (device.index or 0)


class ProcessLane:
    """One decode process feeding one model: the same inbox and messages as `batched.Lane`."""

    def __init__(
        self,
        embedder: LaneModel,
        decoding: DecodeProcess,
        offset_of: Callable[[np.ndarray], int | None],
        done: queue.Queue,
        timed: Timer = untimed,
    ) -> None:
        self.embedder = embedder
        self.inbox: queue.Queue = queue.Queue(maxsize=1)
        self._decoding, self._offset_of, self._done = decoding, offset_of, done
        self._timed = timed
        self._sent: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(RING_SLOTS + 1)
        self._ring: torch.Tensor | None = None
        self._alive = True
        self._sending = threading.Lock()
        decoding.configure(embedder.spec, embedder.batch_size)
        self._threads = [
            threading.Thread(target=self._guard, args=(self._feed_loop,), daemon=True),
            threading.Thread(target=self._guard, args=(self._receive_loop,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as error:  # reported to the caller, which stops the run
            self._done.put(error)

    def _send(self, message: tuple) -> None:
        """Send from either thread (one at a time: a long message goes out in several writes)."""
        try:
            with self._sending:
                self._decoding.connection.send(message)
        except (OSError, ValueError) as error:  # gone, or closed
            self._lost(f"cannot reach it ({error})")

    def _lost(self, reason: str) -> None:
        if self._alive:
            log.warning(
                "the decode process on %s stopped: %s; the CPU decode workers take its files",
                self._decoding.device,
                reason,
            )
        self._alive = False

    def _entry(self, item: Item) -> Entry:
        offset = self._offset_of(item.buffer)
        if offset is None:  # read outside the arena: the bytes go along
            return bytes(item.data), item.header.orientation
        return offset, len(item.data), item.header.orientation

    def _feed_loop(self) -> None:
        """Send batches to the decode process, at most the ring's slots plus one ahead."""
        while (batch := self.inbox.get()) is not _STOP:
            with self._timed("lane_room_wait"):
                self._room.acquire()
            if self._alive:
                self._send(("batch", [self._entry(item) for item in batch]))
            self._sent.put(batch)
        self._sent.put(_STOP)

    def _reply(self) -> tuple[int | None, list[bool]] | None:
        """The next batch's slot and which of its files decoded; None once the process is lost."""
        while self._alive:
            try:
                with self._timed("decoded_wait"):
                    kind, *body = self._decoding.connection.recv()
            except (EOFError, OSError) as error:
                self._lost(f"it ended ({error or 'no more answers'})")
                return None
            except (RuntimeError, pickle.UnpicklingError) as error:  # the ring could not be shared
                self._lost(f"its answer could not be read ({error})")
                return None
            if kind == "ring":
                self._ring = body[0]
            elif kind == "error":
                self._lost(body[0])
            else:
                return body[0], body[1]
        return None

    def _receive_loop(self) -> None:
        """Take each batch's crops out of its slot, in the order sent, and give the slot back at
        once, so the decode process never waits for the model; embed what has gathered when it
        fills a model batch or no more crops are waiting (and not while the model loads)."""
        gathered = HeldBatches(self.embedder, self._done, self._timed)
        while (batch := self._sent.get()) is not _STOP:
            reply = self._reply()
            self._room.release()
            for item in batch:  # decoded (or never to be): the bytes' buffers go back
                item.release()
            if reply is None:
                self._done.put(([], None, [item.row for item in batch]))
                continue
            slot, decoded = reply
            good = [item for item, ok in zip(batch, decoded, strict=True) if ok]
            failed = [item.row for item, ok in zip(batch, decoded, strict=True) if not ok]
            crops = None
            if slot is not None:
                assert self._ring is not None
                crops = self._ring[slot, : len(good)].clone()
                self._give_back(slot)
            gathered.add((good, crops, failed))
            if gathered.waiting_for_model:
                continue
            if gathered.images < self.embedder.batch_size and self._more_waiting():
                continue
            gathered.embed()
        gathered.embed()
        self._ring = None  # before the decode process that shares it ends
        self._done.put(LANE_DONE)

    def _more_waiting(self) -> bool:
        """Whether the decode process has sent more (crops ready to gather)."""
        try:
            return self._alive and self._decoding.connection.poll()
        except OSError:
            return False

    def _give_back(self, slot: int) -> None:
        """Return a slot whose crops are copied out (that copy finished first)."""
        if not self._alive:
            return
        if self.embedder.device.type == "cuda":
            torch.cuda.current_stream(self.embedder.device).synchronize()
        self._send(("free", slot))

    def stop(self) -> None:
        """Finish the batches handed in, then end both threads."""
        self.inbox.put(_STOP)
