"""The one safe way to open an image: an allowlist of formats, size and pixel caps, EXIF
orientation, every pixel mode turned into 8-bit RGB, and model-ready pixels.

Kept free of torch so that decode worker processes start quickly and a hostile file that kills
one of them never touches the process holding the model.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from pixseek.jpeg_markers import read_frame
from pixseek.phash import perceptual_hash

if TYPE_CHECKING:
    from pixseek.config import IndexerSettings

pillow_heif.register_heif_opener()

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")
IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".gif",
        ".bmp",
        ".dib",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
    ]
)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, _DATETIME = 36867, 36881, 306
_MAKE, _MODEL = 271, 272


class ImageError(Exception):
    """A file that cannot be indexed; `retryable` when a later run may succeed (still copying)."""

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class Limits:
    """Caps applied before any pixel is decoded."""

    max_bytes: int
    max_pixels: int

    @classmethod
    def of(cls, indexer: IndexerSettings) -> Limits:
        """The caps `indexer.max_file_mb` and `indexer.max_pixels` set."""
        return cls(max_bytes=int(indexer.max_file_mb * 1e6), max_pixels=indexer.max_pixels)


@dataclass(frozen=True)
class PreprocessSpec:
    """A CLIP-style image processor's geometry: resize, then centre crop (pixels stay uint8)."""

    shortest_edge: int | None
    resize_to: tuple[int, int] | None
    crop: tuple[int, int] | None
    resample: int = Image.Resampling.BICUBIC

    @property
    def target(self) -> int:
        """The largest side the model looks at: JPEG draft decoding stays at least twice this."""
        sizes = [self.shortest_edge or 0, *(self.resize_to or ()), *(self.crop or ())]
        return max(sizes)

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an image of that size after the resize, before the crop."""
        if self.shortest_edge is not None:
            new_width, new_height = shortest_edge_size((width, height), self.shortest_edge)
            return new_height, new_width
        return self.resize_to if self.resize_to is not None else (height, width)


@dataclass
class DecodedImage:
    """An image opened for indexing: RGB pixels plus the facts stored as record metadata."""

    image: Image.Image
    width: int
    height: int
    format: str
    taken_at: float | None
    camera: str | None


@dataclass
class PreparedImage:
    """What a decode worker hands back: model-ready uint8 pixels, the record metadata and the
    perceptual hash of the whole picture (computed here, where it is already decoded)."""

    pixels: np.ndarray
    width: int
    height: int
    format: str
    taken_at: float | None
    camera: str | None
    phash: int | None = None


def open_image(path: Path, limits: Limits, draft_target: int | None = None) -> DecodedImage:
    """Decode `path` to upright 8-bit RGB, or raise ImageError with a reason a user can act on."""
    try:
        check_file_size(os.stat(path).st_size, limits)
        Image.MAX_IMAGE_PIXELS = limits.max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=ALLOWED_FORMATS) as img:
                return _decode(img, limits, draft_target)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            "not an image in an allowed format (" + ", ".join(ALLOWED_FORMATS) + ")"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"decompression bomb refused: {error}") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except (OSError, SyntaxError, EOFError, ValueError) as error:
        if _looks_truncated(error):
            raise ImageError(
                "truncated image data; retried on the next run (the file may still be copying)",
                retryable=True,
            ) from None
        raise ImageError(f"cannot decode: {type(error).__name__}: {error}") from None


def prepare_image(path: Path, limits: Limits, spec: PreprocessSpec) -> PreparedImage:
    """Open `path` and turn it into the model's input geometry (the decode worker's job)."""
    decoded = open_image(path, limits, draft_target=spec.target)
    return PreparedImage(
        pixels=preprocess(decoded.image, spec),
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        taken_at=decoded.taken_at,
        camera=decoded.camera,
        phash=perceptual_hash(decoded.image),
    )


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: 16-bit scaled (not clipped), alpha over white."""
    if img.mode in _SIXTEEN_BIT_MODES:
        wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
        return Image.fromarray((wide >> 8).astype(np.uint8), mode="L").convert("RGB")
    if img.mode == "F":
        return Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def check_file_size(size: int, limits: Limits) -> None:
    """Refuse empty files (retryable: maybe still being written) and files above the cap."""
    if size == 0:
        raise ImageError("empty file (0 bytes); retried on the next run", retryable=True)
    if size > limits.max_bytes:
        raise ImageError(
            f"file is {size / 1e6:.1f} MB, above indexer.max_file_mb "
            f"({limits.max_bytes / 1e6:.1f} MB)"
        )


@dataclass(frozen=True)
class JpegHeader:
    """What batched JPEG decoding needs first: upright size, EXIF orientation, metadata."""

    width: int
    height: int
    orientation: int
    taken_at: float | None
    camera: str | None
    format: str = "JPEG"


def read_jpeg_header(data: bytes | memoryview, limits: Limits) -> JpegHeader | None:
    """Parse a JPEG's header without decoding pixels.

    Returns None for anything batched decoding must leave to `open_image` (not a JPEG, CMYK,
    unreadable header); raises ImageError for files the caps refuse. Plain JPEGs are read by a
    marker walk and Pillow's EXIF parser; the rest are opened with Pillow (the same answers,
    slower).
    """
    check_file_size(len(data), limits)
    frame = read_frame(data)
    if frame is None:
        return _read_header_with_pillow(data, limits)
    if frame.components not in (1, 3) or frame.width * frame.height > limits.max_pixels:
        return None
    if frame.exif is None:  # no metadata to read: skip Pillow's EXIF object (half the time)
        return JpegHeader(frame.width, frame.height, 1, None, None)
    exif = Image.Exif()
    try:
        exif.load(frame.exif)
        return _jpeg_header(frame.width, frame.height, exif)
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, TypeError):
        return _read_header_with_pillow(data, limits)


def _read_header_with_pillow(data: bytes | memoryview, limits: Limits) -> JpegHeader | None:
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as img:
            if img.mode not in ("RGB", "L"):
                return None
            if img.width * img.height > limits.max_pixels:
                return None
            return _jpeg_header(img.width, img.height, img.getexif())
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return None


def _jpeg_header(width: int, height: int, exif: Image.Exif) -> JpegHeader:
    orientation = exif.get(0x0112, 1)
    swapped = _swaps_axes(exif)
    return JpegHeader(
        width=height if swapped else width,
        height=width if swapped else height,
        orientation=orientation if orientation in range(1, 9) else 1,
        taken_at=_taken_at(exif),
        camera=_camera(exif),
    )


def preprocess(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize and centre-crop like the model's image processor; returns uint8 [h, w, 3]."""
    new_height, new_width = spec.resized(img.height, img.width)
    if (new_height, new_width) != (img.height, img.width):
        img = img.resize((new_width, new_height), spec.resample)
    pixels = np.asarray(img, dtype=np.uint8)
    return center_crop(pixels, spec.crop) if spec.crop is not None else pixels


def center_crop(pixels: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Centre crop to (height, width), padding with zeros where the image is smaller."""
    height, width = pixels.shape[:2]
    crop_h, crop_w = crop
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), 3), dtype=np.uint8)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = pixels
        pixels, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return np.ascontiguousarray(pixels[top : top + crop_h, left : left + crop_w])


def shortest_edge_size(size: tuple[int, int], shortest_edge: int) -> tuple[int, int]:
    width, height = size
    short, long = (width, height) if width <= height else (height, width)
    new_long = max(1, int(shortest_edge * long / short))
    return (shortest_edge, new_long) if width <= height else (new_long, shortest_edge)


def _decode(img: Image.Image, limits: Limits, draft_target: int | None) -> DecodedImage:
    pixels = img.width * img.height
    if pixels > limits.max_pixels:
        raise ImageError(
            f"decompression bomb refused: {img.width}x{img.height} = {pixels} pixels, "
            f"above indexer.max_pixels ({limits.max_pixels})"
        )
    exif = img.getexif()
    width, height = (img.height, img.width) if _swaps_axes(exif) else (img.width, img.height)
    image_format = img.format or "unknown"
    if image_format == "JPEG" and draft_target:
        img.draft("RGB", (2 * draft_target, 2 * draft_target))
    rgb = to_rgb(ImageOps.exif_transpose(img))
    rgb.load()
    return DecodedImage(rgb, width, height, image_format, _taken_at(exif), _camera(exif))


def _swaps_axes(exif: Image.Exif) -> bool:
    return exif.get(0x0112) in (5, 6, 7, 8)


def _taken_at(exif: Image.Exif) -> float | None:
    details = exif.get_ifd(_EXIF_IFD)
    stamp = details.get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.strptime(stamp.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset = details.get(_OFFSET_TIME_ORIGINAL)
    zone = timezone.utc
    if isinstance(offset, str) and len(offset) >= 6 and offset[0] in "+-":
        sign = 1 if offset[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
    return moment.replace(tzinfo=zone).timestamp()


def _camera(exif: Image.Exif) -> str | None:
    parts = [str(exif.get(tag, "")).strip("\x00 ") for tag in (_MAKE, _MODEL)]
    name = " ".join(part for part in parts if part)
    return name[:200] or None


def _looks_truncated(error: BaseException) -> bool:
    text = str(error).lower()
    return "truncated" in text or isinstance(error, EOFError) or "premature end" in text
