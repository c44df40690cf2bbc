"""A JPEG's frame size and EXIF block, read by walking its markers (no pixels, no tables).

Pillow parses every table of the header in Python (about 90 µs a file on a busy 16-core host);
walking the markers and jumping over their contents takes a few µs. That matters when a GPU
decodes 10,000 small JPEGs a second and one interpreter reads their headers. Anything this walk
does not recognise is left to Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass

_SOI = b"\xff\xd8"
_SEQUENTIAL_OR_PROGRESSIVE = {0xC0, 0xC1, 0xC2}  # Huffman-coded frames the GPU decoders take
_OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length
_SOS, _APP1 = 0xDA, 0xE1
_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"


@dataclass(frozen=True)
class JpegFrame:
    """The frame header of an 8-bit Huffman-coded JPEG, and its EXIF block as Pillow's
    `Image.Exif.load` takes it (segments joined as Pillow joins them)."""

    width: int
    height: int
    components: int
    exif: bytes | None


def read_frame(data: bytes | memoryview) -> JpegFrame | None:
    """The frame of a plain 8-bit baseline, extended or progressive JPEG; None for anything
    else (not a JPEG, another coding, 12-bit, XMP metadata that may hold an orientation, a
    damaged header), which the caller leaves to Pillow."""
    if data[:2] != _SOI:
        return None
    position, end = 2, len(data)
    frame: tuple[int, int, int] | None = None
    exif: bytes | None = None
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        if marker == _SOS:
            return JpegFrame(*frame, exif) if frame else None
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        body = data[position + 4 : position + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker == _APP1 and body[: len(_XMP)] == _XMP:
            return None
        if marker == _APP1 and body[: len(_EXIF)] == _EXIF:
            exif = bytes(body) if exif is None else exif + body[len(_EXIF) :]
        elif marker in _SEQUENTIAL_OR_PROGRESSIVE:
            if frame or len(body) < 6 or body[0] != 8:
                return None
            frame = (int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big"), body[5])
            if not (frame[0] and frame[1]):
                return None
        elif marker in _OTHER_FRAMES:
            return None
        position += 2 + length
    return None
