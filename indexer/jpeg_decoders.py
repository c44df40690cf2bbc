"""JPEG decoders that return pixels as tensors on the model's device, a batch at a time.

In order of preference on a GPU: nvjpeg on the SMs through torchvision, the hardware JPEG engines
through nvImageCodec, then Pillow in threads (also the decoder on a CPU). nvImageCodec decodes
faster alone, but its Python calls let go of the interpreter lock on every decoded image's every
property, and each time wait to get it back from the threads that read and embed: on an H100,
batched embedding ran 20-70% faster with nvjpeg (same machine, same files). Every decoder returns
the stored (not yet EXIF-rotated) RGB pixels as uint8 [3, h, w], or None for an image it could
not decode: that file then goes the CPU path, which gives the reason, so one bad file never
fails a batch.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)
_MAKING = threading.Lock()


class JpegDecoder(Protocol):
    """Decodes a batch of JPEG files' bytes on `device`."""

    name: str

    def decode(self, blobs: Sequence[bytes]) -> list[torch.Tensor | None]: ...


def gpu_decoder_available() -> bool:
    """True when a GPU JPEG decoder is installed (the `gpu` extra) and CUDA is usable."""
    if not torch.cuda.is_available():
        return False
    return any(importlib.util.find_spec(name) for name in ("nvidia.nvimgcodec", "torchvision"))


def make_decoder(
    device: torch.device, draft_target: int, threads: int, prefer: str = "auto"
) -> JpegDecoder:
    """The decoder `prefer`red (`auto`: the fastest) that works on `device`; made once per
    process, so a watcher's small runs don't pay for setting it up each time."""
    if device.type == "cuda" and (decoder := gpu_decoder(device, prefer)) is not None:
        return decoder
    return _pillow_decoder(device, draft_target, threads)


def gpu_decoder(device: torch.device, prefer: str = "auto") -> JpegDecoder | None:
    """The GPU decoder `prefer`red (`auto`: the fastest) on a CUDA `device`, made once per
    process and warmed up with one small JPEG (the libraries' start-up, about 1-2 s on an H100,
    is paid here rather than by the first batch); None when neither library works there. A
    thread asking while another makes it waits for that one."""
    with _MAKING:
        return _gpu_decoder(device, prefer)


@functools.lru_cache(maxsize=8)
def _gpu_decoder(device: torch.device, prefer: str) -> JpegDecoder | None:
    factories = {"nvimgcodec": NvImageCodecDecoder, "nvjpeg": NvjpegDecoder}
    order = [factories[prefer]] if prefer in factories else []
    for factory in [*order, NvjpegDecoder, NvImageCodecDecoder]:
        try:
            decoder = factory(device)
        except (ImportError, RuntimeError, AttributeError, TypeError) as error:
            log.warning("%s unavailable: %s", factory.__name__, error)
            continue
        decoder.decode([_tiny_jpeg()])
        return decoder
    return None


@functools.cache
def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buffer, "JPEG")
    return buffer.getvalue()


@functools.lru_cache(maxsize=8)
def _pillow_decoder(device: torch.device, draft_target: int, threads: int) -> JpegDecoder:
    return PillowDecoder(device, draft_target, threads)


class NvImageCodecDecoder:
    """The GPU's hardware JPEG engines, falling back to CUDA and hybrid decoding inside."""

    name = "nvimgcodec"

    def __init__(self, device: torch.device) -> None:
        from nvidia import nvimgcodec

        self._codec = nvimgcodec
        self.device = device
        kinds = ("HW_GPU_ONLY", "GPU_ONLY", "HYBRID_CPU_GPU")
        backends = [nvimgcodec.Backend(getattr(nvimgcodec.BackendKind, kind)) for kind in kinds]
        self._decoder = nvimgcodec.Decoder(device_id=device.index or 0, backends=backends)
        self._params = nvimgcodec.DecodeParams(
            apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB
        )

    def decode(self, blobs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Decode on the current stream; returns [3, h, w] uint8 tensors."""
        stream = torch.cuda.current_stream(self.device).cuda_stream
        images = self._decoder.decode(list(blobs), params=self._params, cuda_stream=stream)
        out: list[torch.Tensor | None] = []
        for image in images:
            if image is None:
                out.append(None)
                continue
            pixels = torch.as_tensor(image, device=self.device)
            out.append(pixels.permute(2, 0, 1) if pixels.ndim == 3 else None)
        return out


class NvjpegDecoder:
    """nvjpeg through torchvision (CUDA kernels; no hardware engines)."""

    name = "nvjpeg"

    def __init__(self, device: torch.device) -> None:
        from torchvision.io import ImageReadMode, decode_jpeg

        self._decode_jpeg, self._mode = decode_jpeg, ImageReadMode.RGB
        self.device = device

    def decode(self, blobs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Decode the batch in one call; on an error, one at a time to find the culprit."""
        with warnings.catch_warnings():  # decode_jpeg only reads: no need to copy the bytes
            warnings.filterwarnings("ignore", "The given buffer is not writable")
            data = [torch.frombuffer(blob, dtype=torch.uint8) for blob in blobs]
        try:
            return list(self._decode_jpeg(data, mode=self._mode, device=self.device))
        except RuntimeError:
            return [self._one(tensor) for tensor in data]

    def _one(self, data: torch.Tensor) -> torch.Tensor | None:
        try:
            return self._decode_jpeg(data, mode=self._mode, device=self.device)
        except RuntimeError:
            return None


class PillowDecoder:
    """Pillow in threads (it releases the GIL while decoding), `draft()` to twice the target."""

    name = "pillow"

    def __init__(self, device: torch.device, draft_target: int, threads: int) -> None:
        self.device = device
        self.draft_target = draft_target
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="pixseek-jpeg")

    def decode(self, blobs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Decode every blob; pixels move to the device as they are ready."""
        return list(self._pool.map(self._one, blobs))

    def _one(self, blob: bytes) -> torch.Tensor | None:
        try:
            with Image.open(io.BytesIO(blob), formats=("JPEG",)) as img:
                img.draft("RGB", (2 * self.draft_target, 2 * self.draft_target))
                pixels = np.array(img.convert("RGB"))
        except (OSError, SyntaxError, ValueError, EOFError):
            return None
        return torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)
