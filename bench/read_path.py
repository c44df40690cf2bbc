"""The indexing process's own cost per file on the batched path's read side: files go through
read processes (`ReadProcesses.read_items`, as `pixseek index` reads them) and come back as
items whose buffers are looked up in the shared arena, as a decode process's lane does. Small
JPEGs, so that reading costs little and what is left is the Python work per file, which shares
one interpreter lock with the threads that drive the GPU.

    python bench/read_path.py                    # 20,000 files, 2 read processes, 3 rounds
    python bench/read_path.py --files 5000 --readers 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pixseek.catalog import FileRow, record_id
from pixseek.config import IndexerSettings
from pixseek.imaging import Limits
from pixseek.indexer.read_processes import ReadProcesses
from pixseek.indexer.reads import Item


def small_jpegs(folder: Path, count: int) -> list[FileRow]:
    """`count` small JPEGs (64x48) in `folder`, as catalog rows still to hash."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    rows = []
    for number in range(count):
        path = folder / f"{number:06d}.jpg"
        Image.fromarray(np.roll(pixels, number, axis=1)).save(path, quality=80)
        stat = path.stat()
        row = FileRow(record_id(str(folder), path.name), str(folder), path.name, str(path),
                      stat.st_size, stat.st_mtime_ns, None, "new")  # fmt: skip
        rows.append(row)
    return rows


def main() -> int:
    """Print files/s and the indexing process's CPU µs per file, per round."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--readers", type=int, default=2, help="read processes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixseek-read-path-") as scratch:
        rows = small_jpegs(Path(scratch), args.files)
        with ReadProcesses(args.readers, Limits.of(IndexerSettings())) as readers:
            for round_number in range(1, args.rounds + 1):
                started, cpu = time.perf_counter(), time.thread_time()
                for result in readers.read_items(rows, 4096):
                    if isinstance(result, Item):
                        readers.buffers.offset(result.buffer)  # as a decode process's lane
                        result.release()
                seconds = time.perf_counter() - started
                per_file = 1e6 * (time.thread_time() - cpu) / len(rows)
                print(
                    f"round {round_number}: {len(rows) / seconds:,.0f} files/s, this process's "
                    f"CPU {per_file:.1f} µs per file",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
