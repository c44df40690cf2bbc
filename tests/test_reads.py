"""The batched path's readers: pooled buffers hold each file's own bytes, whatever came before."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from pixseek.catalog import FileRow, content_hash
from pixseek.imaging import ImageError
from pixseek.indexer.reads import Buffers, Item, read_items
from tests.test_parity import LIMITS, photo_like


def _row(path: Path) -> FileRow:
    return FileRow(
        id=path.name,
        root=str(path.parent),
        rel_path=path.name,
        path=str(path),
        size=path.stat().st_size if path.exists() else 0,
        mtime_ns=0,
        content_hash=None,
        status="pending",
    )


def _jpeg(width: int, height: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    photo_like(width, height).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    """JPEGs of many sizes (so buffers are reused by shorter files), a PNG and a missing file."""
    paths = []
    for number, (width, height) in enumerate([(900, 700), (64, 48), (640, 480), (120, 90)] * 4):
        path = tmp_path / f"img_{number:02d}.jpg"
        path.write_bytes(_jpeg(width, height, 60 + 2 * number))
        paths.append(path)
    Image.new("RGB", (32, 32)).save(tmp_path / "flat.png")
    return [*paths, tmp_path / "flat.png", tmp_path / "gone.jpg"]


def test_reused_buffers_hold_each_files_own_bytes(files):
    buffers = Buffers()
    for order in (files, files[::-1], files[1::2] + files[::2]):  # buffers change hands
        results = list(read_items([_row(path) for path in order], LIMITS, 3, 8, buffers=buffers))
        assert len(results) == len(order)
        items = [result for result in results if isinstance(result, Item)]
        assert {Path(item.row.path) for item in items} == {
            p for p in order if p.suffix == ".jpg" and p.exists()
        }
        for item in items:
            assert item.data.tobytes() == Path(item.row.path).read_bytes()
            assert item.row.content_hash == content_hash(item.row.path)
        left = [result for result in results if isinstance(result, FileRow)]
        assert {Path(row.path).name for row in left} == {"flat.png", "gone.jpg"}
        for item in items:
            item.release()


def test_a_file_longer_than_its_size_is_left_to_the_cpu_path():
    """/proc files say they are empty and then give bytes: as a file that grew while read."""
    growing = Path("/proc/kallsyms")
    try:
        assert growing.stat().st_size == 0 and len(growing.read_bytes()) > 1 << 16
    except (OSError, AssertionError):
        pytest.skip("needs a readable /proc/kallsyms (size 0, over 64 KB of text)")
    row = _row(growing)
    assert list(read_items([row], LIMITS, 1, 8)) == [row]


def test_refused_files_come_back_with_the_reason(tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(_jpeg(640, 480, 90))
    small = type(LIMITS)(max_bytes=1000, max_pixels=LIMITS.max_pixels)
    [(row, error)] = list(read_items([_row(path)], small, 1, 8))
    assert row.path == str(path) and isinstance(error, ImageError)
    assert "max_file_mb" in error.reason
