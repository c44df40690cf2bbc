"""The model's image geometry on tensors: orient, resize and centre-crop decoded images in batches.

This is `imaging.preprocess` for pixels that are already on the model's device (decoded there by
the GPU's JPEG engines): the same shortest-edge size, bicubic with antialiasing, the same centre
crop, rounded back to uint8 as the reference processor's Pillow path does.

On a GPU the resize is Pillow's own: its bicubic filter, widened by the scale factor when
shrinking, is written out as one weight matrix per axis (rows: the output pixels the crop keeps;
columns: input pixels), and the batch goes through two half-precision matrix products on the
tensor cores. A 12 MP frame is read once, whole, with no pre-reduction to approximate Pillow's
full-frame filter. On a CPU, where the banded filter is cheaper than a dense product, torch's
bicubic interpolation with antialiasing does it (the CPU path's JPEGs come draft-decoded, near
twice the target size).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pixseek.imaging import PreprocessSpec

# Bytes of full-size pixels converted per resize call: bounds GPU memory for batches of big frames.
_CHUNK_BYTES = 1 << 30
_BICUBIC_A = -0.5  # Pillow's bicubic kernel parameter
_BICUBIC_SUPPORT = 2.0


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1-8) to a [3, h, w] image, like `ImageOps.exif_transpose`."""
    if orientation in (2, 4, 5, 7):
        image = image.flip(-1)
    turns = {3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}.get(orientation, 0)
    return torch.rot90(image, turns, dims=(-2, -1)) if turns else image


def resize_crop(
    images: Sequence[torch.Tensor], spec: PreprocessSpec, by_matrices: bool | None = None
) -> torch.Tensor:
    """Resize and centre-crop upright uint8 [3, h, w] images to one uint8 [n, 3, H, W] batch.

    Images of equal size are processed together, so a folder from one camera costs a few kernel
    launches per batch rather than per image. `by_matrices` picks Pillow's filter as matrix
    products (default: on a GPU) over torch's interpolation.
    """
    by_matrices = images[0].is_cuda if by_matrices is None else by_matrices
    resize = _by_matrices if by_matrices else _by_interpolation
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, image in enumerate(images):
        groups[tuple(image.shape[-2:])].append(position)
    results: list[torch.Tensor | None] = [None] * len(images)
    for (height, width), positions in groups.items():
        per_chunk = max(1, _CHUNK_BYTES // (3 * height * width * 4))
        for start in range(0, len(positions), per_chunk):
            chunk = positions[start : start + per_chunk]
            same_size = [images[position] for position in chunk]
            for position, out in zip(chunk, resize(same_size, spec), strict=True):
                results[position] = out
    return torch.stack(results)  # type: ignore[arg-type]


def _by_matrices(images: list[torch.Tensor], spec: PreprocessSpec) -> torch.Tensor:
    """Same-size images through Pillow's bicubic weights, as two matrix products per image."""
    height, width = images[0].shape[-2:]
    new_height, new_width = spec.resized(height, width)
    crop_height, crop_width = spec.crop or (new_height, new_width)
    first = images[0]
    dtype = torch.float16 if first.is_cuda else torch.float32
    rows = _bicubic_weights(height, new_height, crop_height, first.device, dtype)
    columns = _bicubic_weights(width, new_width, crop_width, first.device, dtype)
    count = len(images)
    if first.permute(1, 2, 0).is_contiguous():
        # Interleaved RGB as the decoder wrote it: rows first, over [h, 3w] matrices as they lie.
        stacked = torch.stack([image.permute(1, 2, 0) for image in images]).to(dtype)
        tall = torch.bmm(rows.expand(count, -1, -1), stacked.view(count, height, 3 * width))
        planar = tall.view(count, crop_height, width, 3).permute(0, 3, 1, 2)
        pixels = torch.matmul(planar, columns.T)
    else:  # planar: columns first, as one [n·3·h, w] matrix
        stacked = torch.stack(images).to(dtype)
        wide = stacked.view(-1, width) @ columns.T
        pixels = torch.matmul(rows, wide.view(count, 3, height, crop_width))
    return pixels.float().round_().clamp_(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=64)
def _bicubic_weights(
    size: int, new_size: int, crop: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """[crop, size]: Pillow's bicubic weights for the centred `crop` of a resize from `size` to
    `new_size` pixels (zero rows where the crop is wider than the image: the crop's padding)."""
    offset = (new_size - crop) // 2 if new_size >= crop else -((crop - new_size) // 2)
    outputs = np.arange(offset, offset + crop)
    scale = size / new_size
    stretch = max(scale, 1.0)  # shrinking widens the filter: that is the antialiasing
    support = _BICUBIC_SUPPORT * stretch
    centres = (outputs + 0.5) * scale
    low = np.maximum((centres - support + 0.5).astype(int), 0)  # Pillow's bounds, truncated
    high = np.minimum((centres + support + 0.5).astype(int), size)
    inputs = np.arange(size)
    inside = (inputs >= low[:, None]) & (inputs < high[:, None])
    weights = np.where(inside, _bicubic((inputs + 0.5 - centres[:, None]) / stretch), 0.0)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    weights[(outputs < 0) | (outputs >= new_size)] = 0.0
    return torch.from_numpy(weights).to(device=device, dtype=dtype)


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's bicubic kernel (a = -0.5), support 2."""
    x = np.abs(x)
    a = _BICUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < _BICUBIC_SUPPORT, far, 0.0))


def _by_interpolation(images: list[torch.Tensor], spec: PreprocessSpec) -> torch.Tensor:
    """Same-size images through torch's bicubic interpolation with antialiasing."""
    batch = torch.stack(images)
    height, width = batch.shape[-2:]
    size = spec.resized(height, width)
    pixels = batch.float()
    if size != (height, width):
        pixels = F.interpolate(
            pixels, size=size, mode="bicubic", antialias=True, align_corners=False
        )
    resized = pixels.round_().clamp_(0, 255).to(torch.uint8)
    return _center_crop(resized, spec.crop) if spec.crop is not None else resized


def _center_crop(batch: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """Centre crop to (height, width), padding with zeros where the image is smaller."""
    height, width = batch.shape[-2:]
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        batch = F.pad(batch, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        height, width = batch.shape[-2:]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return batch[..., top : top + crop_h, left : left + crop_w].contiguous()
