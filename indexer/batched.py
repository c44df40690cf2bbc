"""Batched JPEG indexing: files are read and their headers parsed in threads (or read processes),
then each batch is decoded, oriented, resized and embedded on the model's device.

One lane per model device (every visible GPU with `model.device: cuda`), or, where the read
processes brought decode processes for a device, one `ProcessLane` per decode process there. A
lane here runs two threads — decode, and resize+embed — with a short queue between them, each on
its own CUDA stream, so the next batch decodes while the model runs on this one. A lane may start
before its model has loaded (`lane_models.LoadingModel`): it then holds resized batches until
the model is ready. Files the batched path can't take (other formats, CMYK, oversized or corrupt
JPEGs) come back as leftovers for the CPU decode workers, which give every failure its reason.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pixseek.catalog import FileRow
from pixseek.embedder import Embedder
from pixseek.imaging import ImageError, JpegHeader, Limits
from pixseek.indexer.decode import worker_count
from pixseek.indexer.jpeg_decoders import gpu_decoder, make_decoder
from pixseek.indexer.lane_models import LANE_DONE, HeldBatches, LaneModel
from pixseek.indexer.process_lanes import ProcessLane, same_device
from pixseek.indexer.read_processes import ReadProcesses
from pixseek.indexer.reads import Item, Timer, read_items, read_threads, untimed
from pixseek.tensor_preprocess import orient, resize_crop

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
BATCH_PIXELS = 512_000_000  # a batch is cut here too: 42 photos of 12 MP, about 1.5 GB decoded
_STOP = object()
_WARMED: weakref.WeakSet[Embedder] = weakref.WeakSet()
Embedded = tuple[FileRow, JpegHeader, np.ndarray | None]  # None: the cache has its vector


def takes(row: FileRow) -> bool:
    """Files the batched path tries first (by name; the header decides for sure)."""
    return os.path.splitext(row.path)[1].lower() in JPEG_SUFFIXES  # 6 times cheaper than Path


class Lane:
    """One model device: a decode thread and a resize+embed thread joined by a short queue."""

    def __init__(
        self,
        embedder: LaneModel,
        threads: int,
        done: queue.Queue,
        decoder: str = "auto",
        timed: Timer = untimed,
    ) -> None:
        self.embedder = embedder
        self._timed = timed
        self.decoder = make_decoder(embedder.device, embedder.spec.target, threads, decoder)
        self.inbox: queue.Queue = queue.Queue(maxsize=1)
        self._ready: queue.Queue = queue.Queue(maxsize=1)
        self._done = done
        self._threads = [
            threading.Thread(target=self._guard, args=(self._decode_loop,), daemon=True),
            threading.Thread(target=self._guard, args=(self._embed_loop,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _stream(self):
        device = self.embedder.device
        if device.type != "cuda":
            return contextlib.nullcontext()
        return torch.cuda.stream(torch.cuda.Stream(device))

    def _synchronize(self) -> None:
        """Wait for this thread's GPU work, so the next thread never sees unfinished pixels."""
        if self.embedder.device.type == "cuda":
            torch.cuda.current_stream(self.embedder.device).synchronize()

    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            with self._stream():
                loop()
        except BaseException as error:  # reported to the caller, which stops the run
            self._done.put(error)

    def _decode_loop(self) -> None:
        """Decode only: the decoder works while the other thread resizes and embeds."""
        while (batch := self.inbox.get()) is not _STOP:
            with self._timed("decode"):
                pixels = self.decoder.decode([item.data for item in batch])
                self._synchronize()
            for item in batch:  # the bytes are on the device now
                item.release()
            with self._timed("orient"):
                good = [(item, p) for item, p in zip(batch, pixels, strict=True) if p is not None]
                failed = [item.row for item, p in zip(batch, pixels, strict=True) if p is None]
                upright = [orient(p, item.header.orientation) for item, p in good]
                self._synchronize()
            with self._timed("decoded_wait"):  # the model is still busy with the last batch
                self._ready.put(([item for item, _ in good], upright, failed))
        self._ready.put(_STOP)

    def _embed_loop(self) -> None:
        """Resize, then embed; while the model is still loading, resized batches are held (up
        to `HELD_CROP_BYTES`), so reading and decoding start without waiting for it."""
        held = HeldBatches(self.embedder, self._done, self._timed)
        while (ready := self._ready.get()) is not _STOP:
            items, upright, failed = ready
            crops = None
            if upright:
                with self._timed("resize"):
                    crops = resize_crop(upright, self.embedder.spec)
            held.add((items, crops, failed))
            if not held.waiting_for_model:
                held.embed()
        held.embed()
        self._done.put(LANE_DONE)

    def stop(self) -> None:
        """Finish the batches handed in, then end both threads."""
        self.inbox.put(_STOP)


def warm_decoders(devices: Sequence[torch.device], prefer: str = "auto") -> None:
    """Make (and so warm up) each GPU's JPEG decoder before the first real batch needs it."""
    for device in devices:
        if device.type == "cuda":
            gpu_decoder(device, prefer)


def warm_libraries(devices: Sequence[torch.device], dtype: torch.dtype) -> None:
    """Start cuDNN, cuBLAS and the attention kernels on each device with a few tiny calls of
    the kinds a CLIP tower makes, while another thread loads the model's weights: on a GPU its
    first forward pass would otherwise pay for that start-up itself."""
    for device in devices:
        zeros = functools.partial(torch.zeros, dtype=dtype, device=device)
        patches = F.conv2d(zeros((1, 3, 32, 32)), zeros((64, 3, 16, 16)), stride=16)
        tokens = F.layer_norm(patches.flatten(2).transpose(1, 2), (64,))
        heads = F.linear(tokens, zeros((64, 64))).view(1, 4, 4, 16)
        F.scaled_dot_product_attention(heads, heads, heads)
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def warm_model(embedders: Sequence[Embedder]) -> None:
    """Run one small image through each model's resize and forward pass (the first one pays
    for kernel and library start-up), once per model: a server's later runs skip it."""
    for embedder in embedders:
        if embedder in _WARMED:
            continue
        grey = torch.full((3, 48, 64), 128, dtype=torch.uint8, device=embedder.device)
        embedder.encode_uint8(resize_crop([grey], embedder.spec))
        _WARMED.add(embedder)


def embed_batched(
    rows: Sequence[FileRow],
    embedders: Sequence[LaneModel],
    limits: Limits,
    workers: int,
    on_embedded: Callable[[list[Embedded]], None],
    on_leftover: Callable[[FileRow], None],
    on_refused: Callable[[FileRow, ImageError], None],
    decoder: str = "auto",
    timed: Timer = untimed,
    cached: Callable[[list[str]], set[str]] = lambda _hashes: set(),
    readers: ReadProcesses | None = None,
) -> None:
    """Embed `rows` through the lanes; callbacks run on the calling thread, in arrival order.

    A batch holds at most the model's batch size, and at most `BATCH_PIXELS` decoded pixels.
    Files whose content hash `cached` names (rows hashed only as they were read) skip the
    lanes: `on_embedded` gets them with None for a vector. `timed` times the steps: waiting for
    reads, for a free lane and for the last batches, decoding, resizing and the model, and
    `on_embedded` ("hand_off"). Files are read by `readers` where given, else by threads; the
    decode processes that came with them decode for their device.
    """
    threads = worker_count(workers)
    batch_size = embedders[0].batch_size
    done: queue.Queue = queue.Queue()
    lanes: list[Lane | ProcessLane] = []
    processes = readers.decoding if readers is not None else []
    for embedder in embedders:
        decoding = [d for d in processes if same_device(d, embedder.device)]
        if readers is not None and decoding:
            offset_of = readers.buffers.offset
            lanes.extend(ProcessLane(embedder, d, offset_of, done, timed) for d in decoding)
        else:
            lanes.append(Lane(embedder, threads, done, decoder, timed))
    running = len(lanes)
    batch: list[Item] = []
    pixels = 0
    turn = 0

    def hand_over(items: list[Item]) -> None:
        nonlocal turn
        known = cached([item.row.content_hash for item in items if item.row.content_hash])
        if known:
            with timed("hand_off"):
                on_embedded([(i.row, i.header, None) for i in items if i.row.content_hash in known])
            for item in items:
                if item.row.content_hash in known:
                    item.release()
            items = [item for item in items if item.row.content_hash not in known]
            if not items:
                return
        while True:  # the next lane in turn with room takes it: a faster lane takes more
            drain(block=False)
            for step in range(len(lanes)):
                with contextlib.suppress(queue.Full):
                    lanes[(turn + step) % len(lanes)].inbox.put_nowait(items)
                    turn += step + 1
                    return
            with timed("lane_wait"), contextlib.suppress(queue.Full):
                lanes[turn % len(lanes)].inbox.put(items, timeout=0.01)
                turn += 1
                return

    def drain(block: bool) -> None:
        nonlocal running
        while True:
            try:
                with timed("last_batches_wait") if block else contextlib.nullcontext():
                    message = done.get(block=block)
            except queue.Empty:
                return
            if isinstance(message, BaseException):
                raise message
            if message is LANE_DONE:
                running -= 1
                if running == 0:
                    return
                continue
            items, vectors, failed = message
            for row in failed:
                on_leftover(row)
            if items:
                with timed("hand_off"):
                    on_embedded(
                        [(item.row, item.header, v) for item, v in zip(items, vectors, strict=True)]
                    )

    window = max(2 * batch_size, 64)
    if readers is None:
        results = read_items(rows, limits, read_threads(rows, threads), window, timed)
    else:
        results = readers.read_items(rows, window, timed)
    for result in results:
        if isinstance(result, Item):
            batch.append(result)
            pixels += result.header.width * result.header.height
            if len(batch) >= batch_size or pixels >= BATCH_PIXELS:
                hand_over(batch)
                batch, pixels = [], 0
        elif isinstance(result, tuple):
            on_refused(*result)
        else:
            on_leftover(result)
    if batch:
        hand_over(batch)
    for lane in lanes:
        lane.stop()
    drain(block=True)
