"""Decoding and resizing JPEG batches in processes of their own, straight from the read arena.

A decoder driven from the indexing process shares its interpreter lock with the threads that
read, embed and commit; every GPU call that lets go of the lock then waits to get it back, and
nvImageCodec lets go of it for every property of every image. A decode process has one busy
thread: it maps the arena the read processes fill (see `read_processes`), decodes each batch on
its device straight from there, orients, resizes and crops it, and writes the crops into a ring
of slots on the same device that the indexing process maps too (CUDA IPC on a GPU, shared memory
on a CPU). The indexing process only runs the model on a slot and gives it back. Each decode
process overlaps the decoding of one batch with the resizing of the one before, on two streams.

Messages go both ways over a socket as `multiprocessing` connections (framed pickles):
  to it:   ("configure", spec, batch size, slots) once, then ("batch", entries) and ("free", slot),
           where an entry is (offset in the arena, length, EXIF orientation), or (bytes,
           orientation) for a file read outside the arena;
  from it: ("ring", tensor) once, then per batch ("crops", slot or None, which entries decoded),
           or ("error", text) before it ends.
Run as `python -m pixseek.indexer.decode_processes ARENA_FD SOCKET_FD DEVICE DECODER`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from pixseek.imaging import PreprocessSpec

log = logging.getLogger(__name__)

PER_GPU = 2  # two decode processes per GPU: with one, the model waits for decoding at 12 MP
RING_SLOTS = 4
Entry = tuple[int, int, int] | tuple[bytes, int]


def gpu_decoder_kinds(prefer: str) -> list[str]:
    """The decoder for each of a GPU's decode processes (`indexer.gpu_decoder`): `auto` pairs
    the hardware JPEG engines (nvImageCodec) with nvjpeg on the SMs, which decode side by side
    where both are installed; [] where neither is. Checked without importing either."""
    installed = [
        kind
        for kind, module in (("nvimgcodec", "nvidia.nvimgcodec"), ("nvjpeg", "torchvision"))
        if _installed(module)
    ]
    if prefer in installed:
        return [prefer] * PER_GPU
    if not installed:
        return []
    return (installed * PER_GPU)[:PER_GPU]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is not there
        return False


class DecodeProcess:
    """One decode process (started at once; it imports torch and warms its decoder while this
    process goes on), and the connection to it."""

    def __init__(self, arena_descriptor: int, device: str, decoder: str) -> None:
        ours, theirs = socket.socketpair()
        self.device, self.decoder = device, decoder
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(arena_descriptor), str(theirs.fileno()),
                 device, decoder],
                pass_fds=(arena_descriptor, theirs.fileno()),
            )  # fmt: skip
        finally:
            theirs.close()
        self.connection = Connection(ours.detach())
        self._configured: tuple[PreprocessSpec, int] | None = None

    def configure(self, spec: PreprocessSpec, batch_size: int) -> None:
        """Have the process make its ring of crops for this geometry and model batch size (sent
        once; again only if they change). Sent as soon as they are known, the ring is ready
        before the first batch comes."""
        if self._configured == (spec, batch_size):
            return
        self._configured = (spec, batch_size)
        with contextlib.suppress(OSError, ValueError):  # gone: its lane finds out and says so
            self.connection.send(("configure", spec, batch_size, RING_SLOTS))

    def close(self) -> None:
        """End the process (it finishes the batch it is on); a thread reaps it, so the run does
        not wait for its GPU libraries to shut down."""
        self.connection.close()
        threading.Thread(target=self._reap, name="pixseek-decode-reap", daemon=True).start()

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ------------------------------------------------------------------ the decode process's side


class _Decoding:
    """The decode process's state: its decoder, streams, ring and batches not yet decoded."""

    def __init__(self, arena: np.ndarray, connection: Connection, device: str, kind: str) -> None:
        import torch

        from pixseek.indexer.jpeg_decoders import JpegDecoder, gpu_decoder

        self.torch = torch
        self.arena, self.connection = arena, connection
        self.device = torch.device(device)
        self.decoder: JpegDecoder | None = None
        if self.device.type == "cuda":  # made now: its start-up overlaps the indexing process's
            self.decoder = gpu_decoder(self.device, kind)
            if self.decoder is None:
                raise RuntimeError(f"no GPU JPEG decoder works on {device}")
        self.spec: PreprocessSpec | None = None
        self.ring: torch.Tensor | None = None
        self.free: list[int] = []
        self.waiting: deque[list[Entry]] = deque()
        self.unpublished: tuple[int, list[bool], Any, object] | None = None
        self._decode_stream = self._stream()
        self._resize_stream = self._stream()

    def _stream(self) -> torch.cuda.Stream | None:
        return self.torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _on(self, stream: torch.cuda.Stream | None) -> contextlib.AbstractContextManager[object]:
        return self.torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def configure(self, spec: PreprocessSpec, batch_size: int, slots: int) -> None:
        """Make the ring of `slots` batches of crops and send it to the indexing process."""
        from pixseek.indexer.jpeg_decoders import PillowDecoder
        from pixseek.tensor_preprocess import resize_crop

        if self.decoder is None:
            self.torch.set_num_threads(1)
            self.decoder = PillowDecoder(self.device, spec.target, 2)
        self.spec = spec
        crop = spec.crop or spec.resized(spec.target, spec.target)
        shape = (slots, batch_size, 3, *crop)
        self.ring = self.torch.empty(shape, dtype=self.torch.uint8, device=self.device)
        if self.device.type == "cpu":
            self.torch.multiprocessing.set_sharing_strategy("file_system")  # no fd passing
            self.ring.share_memory_()
        self.free = list(range(slots))
        grey = self.torch.full((3, 48, 64), 128, dtype=self.torch.uint8, device=self.device)
        resize_crop([grey], spec)  # the resize's first call pays for its kernels' start-up
        self.connection.send(("ring", self.ring))

    def decode_next(self) -> None:
        """Decode the oldest waiting batch, publish the one before (whose resize ran meanwhile)
        and start resizing this one into a free slot."""
        from pixseek.tensor_preprocess import orient, resize_crop

        entries = self.waiting.popleft()
        blobs = [self._bytes(entry) for entry in entries]
        assert self.decoder is not None and self.ring is not None and self.spec is not None
        with self._on(self._decode_stream):
            pixels = self.decoder.decode(blobs)
        decoded = self._decode_stream.record_event() if self._decode_stream else None
        self.publish()
        good = [(p, entry[-1]) for p, entry in zip(pixels, entries, strict=True) if p is not None]
        decoded_ok = [p is not None for p in pixels]
        if not good:
            self.connection.send(("crops", None, decoded_ok))
            return
        slot = self.free.pop()
        with self._on(self._resize_stream):
            if self._resize_stream is not None and decoded is not None:
                self._resize_stream.wait_event(decoded)
            crops = resize_crop([orient(p, orientation) for p, orientation in good], self.spec)
            self.ring[slot, : len(good)].copy_(crops)
        done = self._resize_stream.record_event() if self._resize_stream else None
        self.unpublished = (slot, decoded_ok, done, (pixels, crops))  # kept until published

    def _bytes(self, entry: Entry) -> np.ndarray | bytes:
        if isinstance(entry[0], bytes):
            return entry[0]
        offset, length, _orientation = entry
        return self.arena[offset : offset + length]

    def publish(self) -> None:
        """Tell the indexing process that the last batch's crops are in their slot."""
        if self.unpublished is None:
            return
        slot, decoded_ok, done, _kept = self.unpublished
        if done is not None:
            done.synchronize()
        self.unpublished = None
        self.connection.send(("crops", slot, decoded_ok))

    def serve(self) -> None:
        """Answer messages until the indexing process closes the connection."""
        while True:
            if self.waiting and self.free:
                self.decode_next()
                continue
            if self.unpublished is not None and not self.connection.poll():
                self.publish()  # nothing to overlap its wait with
            try:
                message = self.connection.recv()
            except EOFError:
                return
            kind, *body = message
            if kind == "batch":
                self.waiting.append(body[0])
            elif kind == "free":
                self.free.append(body[0])
            elif kind == "configure":
                self.configure(*body)


def serve(arena_descriptor: int, socket_descriptor: int, device: str, decoder: str) -> None:
    """One decode process: decode what the indexing process sends until it closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the indexing process decides when to stop
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the libraries' notes stay off `--json`
    arena = np.frombuffer(mmap.mmap(arena_descriptor, os.fstat(arena_descriptor).st_size), np.uint8)
    os.close(arena_descriptor)
    connection = Connection(socket_descriptor)
    try:
        _Decoding(arena, connection, device, decoder).serve()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the indexing process is gone or ending the run
    except Exception as error:  # sent back, so the run says why it decodes elsewhere
        with contextlib.suppress(OSError):
            connection.send(("error", f"{type(error).__name__}: {error}"))
        raise
    os._exit(0)  # done: shutting the GPU libraries down in order only takes time


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
