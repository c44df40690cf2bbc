"""The model's image geometry on tensors: orient, resize and centre-crop decoded images in batches.

This is `imaging.preprocess` for pixels that are already on the model's device (decoded there by
the GPU's JPEG engines): the same shortest-edge size, bicubic with antialiasing, the same centre
crop, rounded back to uint8 as the reference processor's Pillow path does. Large frames are first
reduced by an integer factor with an area filter (cheap and memory-bound), so the bicubic filter
only ever sees about twice the target size — like `draft()` does for JPEGs on the CPU path.
On a GPU, pixels stay in the layout the decoder gave them (interleaved RGB is processed channels
last), so full-size frames are never transposed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pixseek.imaging import PreprocessSpec, shortest_edge_size

# Bytes of full-size pixels converted per resize call: bounds GPU memory for batches of big frames.
_CHUNK_BYTES = 1 << 30


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation (1-8) to a [3, h, w] image, like `ImageOps.exif_transpose`."""
    if orientation in (2, 4, 5, 7):
        image = image.flip(-1)
    turns = {3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}.get(orientation, 0)
    return torch.rot90(image, turns, dims=(-2, -1)) if turns else image


def resize_crop(images: Sequence[torch.Tensor], spec: PreprocessSpec) -> torch.Tensor:
    """Resize and centre-crop upright uint8 [3, h, w] images to one uint8 [n, 3, H, W] batch.

    Images of equal size are processed together, so a folder from one camera costs a few kernel
    launches per batch rather than per image.
    """
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, image in enumerate(images):
        groups[tuple(image.shape[-2:])].append(position)
    results: list[torch.Tensor | None] = [None] * len(images)
    for (height, width), positions in groups.items():
        per_chunk = max(1, _CHUNK_BYTES // (3 * height * width * 4))
        for start in range(0, len(positions), per_chunk):
            chunk = positions[start : start + per_chunk]
            batch = _stack([images[position] for position in chunk])
            for position, out in zip(chunk, _resize_crop_same_size(batch, spec), strict=True):
                results[position] = out
    return torch.stack(results)  # type: ignore[arg-type]


def _stack(images: list[torch.Tensor]) -> torch.Tensor:
    """[n, 3, h, w]; on a GPU in the images' own layout: pixels stored interleaved (as JPEG
    decoders give them) are stacked as they lie, channels last, instead of being transposed
    (on a CPU the planar copy is faster to resize)."""
    if images[0].is_cuda and images[0].permute(1, 2, 0).is_contiguous():
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


def _resize_crop_same_size(batch: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    height, width = batch.shape[-2:]
    if spec.shortest_edge is not None:
        new_width, new_height = shortest_edge_size((width, height), spec.shortest_edge)
    elif spec.resize_to is not None:
        new_height, new_width = spec.resize_to
    else:
        new_height, new_width = height, width
    factor = min(height // (2 * new_height), width // (2 * new_width))
    if factor > 1:  # half precision on a GPU halves the bytes of this memory-bound step
        wide = batch.half() if batch.is_cuda else batch.float()
        reduced = F.interpolate(wide, size=(height // factor, width // factor), mode="area")
        pixels = reduced.float()
    else:
        pixels = batch.float()
    if (new_height, new_width) != tuple(pixels.shape[-2:]):
        pixels = F.interpolate(
            pixels,
            size=(new_height, new_width),
            mode="bicubic",
            antialias=True,
            align_corners=False,
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
