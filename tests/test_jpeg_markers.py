"""JPEG headers read by walking markers give exactly what Pillow gives, or defer to Pillow."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from pixseek.imaging import _read_header_with_pillow, read_jpeg_header
from pixseek.jpeg_markers import read_frame
from tests.test_parity import LIMITS, photo_like

EXIF_IFD, DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL, MAKE, MODEL = (
    0x8769,
    0x9003,
    0x9011,
    0x10F,
    0x110,
)


def _jpeg(image: Image.Image | None = None, **save: object) -> bytes:
    buffer = io.BytesIO()
    (image or photo_like(320, 240)).save(buffer, "JPEG", **save)
    return buffer.getvalue()


def _exif(orientation: int | None, dated: bool = True) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    exif[MAKE], exif[MODEL] = "Fujifilm", "X-T5"
    if dated:
        details = exif.get_ifd(EXIF_IFD)
        details[DATETIME_ORIGINAL] = "2024:05:17 08:30:00"
        details[OFFSET_TIME_ORIGINAL] = "+02:00"
    return exif


PLAIN = {
    "baseline": lambda: _jpeg(),
    "progressive": lambda: _jpeg(progressive=True),
    "grey": lambda: _jpeg(photo_like(320, 240).convert("L")),
    "4:4:4": lambda: _jpeg(subsampling=0),
    "odd size": lambda: _jpeg(photo_like(333, 211)),
    "restart markers": lambda: _jpeg(restart_marker_rows=2),
    "icc profile over two segments, and a comment": lambda: _jpeg(
        icc_profile=b"\x01" * 70_000, comment=b"holiday"
    ),
    **{f"exif orientation {o}": lambda o=o: _jpeg(exif=_exif(o)) for o in range(1, 9)},
    "exif without a date": lambda: _jpeg(exif=_exif(None, dated=False)),
    "exif with a bad orientation": lambda: _jpeg(exif=_exif(42)),
    "cmyk": lambda: _jpeg(photo_like(320, 240).convert("CMYK")),
    "fill bytes before markers": lambda: _filled(_jpeg(exif=_exif(8))),
    "a stray restart marker (no length) in the header": lambda: (
        _jpeg()[:2] + b"\xff\xd3" + _jpeg()[2:]
    ),
}


def _filled(data: bytes) -> bytes:
    """Every marker of the header preceded by two fill bytes (0xFF), as the standard allows."""
    header_end = data.index(b"\xff\xda")
    return data[:2] + data[2:header_end].replace(b"\xff", b"\xff\xff\xff") + data[header_end:]


def _frame_changed(data: bytes, marker: int | None = None, **fields: int) -> bytes:
    """`data` with its frame header's marker or fields (precision, height, width) changed."""
    start = data.index(b"\xff\xc0")
    header = bytearray(data)
    if marker is not None:
        header[start + 1] = marker
    offsets = {"precision": 4, "height": 5, "width": 7}
    for name, value in fields.items():
        size = 1 if name == "precision" else 2
        header[start + offsets[name] : start + offsets[name] + size] = value.to_bytes(size, "big")
    return bytes(header)


@pytest.mark.parametrize("name", PLAIN)
def test_marker_walk_agrees_with_pillow(name):
    data = PLAIN[name]()
    assert read_frame(data) is not None, "the walk should read this file itself"
    expected = _read_header_with_pillow(data, LIMITS)
    assert read_jpeg_header(data, LIMITS) == expected
    assert read_jpeg_header(_as_read(data), LIMITS) == expected


def test_exif_facts_come_through_the_walk():
    header = read_jpeg_header(_jpeg(exif=_exif(6)), LIMITS)
    assert (header.width, header.height, header.orientation) == (240, 320, 6)
    assert header.camera == "Fujifilm X-T5"
    assert header.taken_at == datetime(2024, 5, 17, 6, 30, tzinfo=UTC).timestamp()


def test_xmp_orientation_is_left_to_pillow():
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    data = _jpeg(xmp=xmp)
    assert read_frame(data) is None
    header = read_jpeg_header(data, LIMITS)
    assert (header.width, header.height, header.orientation) == (240, 320, 6)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:40],  # the header is cut short
        lambda data: data[:2] + b"\x00" * 200 + data[2:],  # garbage where a marker belongs
        lambda data: data[:4] + b"\x00\x01" + data[6:],  # a segment length below 2
        lambda data: b"\x89PNG\r\n\x1a\n" + data[8:],  # not a JPEG at all
    ],
)
def test_damaged_headers_are_left_to_pillow_with_the_same_answer(damage):
    data = damage(_jpeg(exif=_exif(3)))
    assert read_frame(data) is None
    expected = _read_header_with_pillow(data, LIMITS)
    assert read_jpeg_header(data, LIMITS) == expected
    assert read_jpeg_header(_as_read(data), LIMITS) == expected


@pytest.mark.parametrize(
    "unusual",
    [
        lambda data: _frame_changed(data, precision=12),  # 12-bit samples
        lambda data: _frame_changed(data, marker=0xC9),  # arithmetic coding
        lambda data: _frame_changed(data, marker=0xC3),  # lossless
        lambda data: _frame_changed(data, height=0),  # height given later, by a DNL marker
        lambda data: data[:2] + data[2:].replace(b"\xff\xc4", _frame(data) + b"\xff\xc4", 1),
    ],
    ids=["12-bit", "arithmetic", "lossless", "height from DNL", "two frame headers"],
)
def test_codings_the_walk_does_not_take_are_left_to_pillow(unusual):
    data = unusual(_jpeg(exif=_exif(6)))
    assert read_frame(data) is None
    assert read_jpeg_header(data, LIMITS) == _read_header_with_pillow(data, LIMITS)


def _frame(data: bytes) -> bytes:
    start = data.index(b"\xff\xc0")
    return data[start : start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")]


def _as_read(data: bytes) -> memoryview:
    """The bytes as the batched path's readers hold them: a view of a reused buffer."""
    buffer = np.full(len(data) + 100, 0xFF, dtype=np.uint8)
    buffer[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return memoryview(buffer[: len(data)])


def test_pixel_cap_applies_on_the_walk():
    data = _jpeg()
    small = type(LIMITS)(max_bytes=LIMITS.max_bytes, max_pixels=1000)
    assert read_frame(data) is not None and read_jpeg_header(data, small) is None
