"""Decode fuzz: mutated JPEG, PNG, GIF, TIFF and HEIC files through `pixseek index`.

Valid files of each format are mutated (bit flips, truncation, splices of two files, header
fields set to extreme values, repeated chunks) and indexed round after round, for a bounded time,
by a real `pixseek index` process: once with the decode worker processes (`indexer.decode:
workers`) and once with the batched JPEG path (`indexer.decode: batched`, Pillow on the CPU).
Every round must exit 0, record every file (indexed, or failed with a reason), and index the
unmutated controls; at the end Chroma holds exactly the indexed files.

    HF_HUB_OFFLINE=1 python bench/decode_fuzz.py                  # 2 x 120 s
    HF_HUB_OFFLINE=1 python bench/decode_fuzz.py --seconds 30 --per-round 100
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pillow_heif
from crash_loop import inspect_afresh
from PIL import Image
from tiny_library import ROOT, parse_options, tiny_model, write_config

from pixseek.catalog import Catalog
from tests.tinyclip import draw_shape

pillow_heif.register_heif_opener()

FORMATS = {"jpg": "JPEG", "png": "PNG", "gif": "GIF", "tif": "TIFF", "heic": "HEIF"}
MODES = ("workers", "batched")
_SOF = (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2", b"\xff\xc3")


@dataclass
class Options:
    seconds: float = 120.0  # per decode mode
    per_round: int = 150
    seed: int = 1


@dataclass
class Mode:
    mode: str
    rounds: int = 0
    files: int = 0
    indexed: int = 0
    failed: int = 0
    exit_codes: list[int] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)  # no row, or failed without a reason
    controls_failed: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    chroma_matches: bool = False
    seconds: float = 0.0


def originals() -> dict[str, bytes]:
    """One valid file per format, with EXIF on the JPEG and transparency on the PNG."""
    rng = random.Random(5)
    image = draw_shape("blue", "triangle", 96, rng)
    files = {}
    for suffix, name in FORMATS.items():
        buffer = io.BytesIO()
        if suffix == "jpg":
            exif = Image.Exif()
            exif[0x0112], exif[0x010F] = 6, "Fuzz Camera"
            image.save(buffer, name, quality=90, exif=exif)
        elif suffix == "png":
            image.convert("RGBA").save(buffer, name)
        elif suffix == "gif":
            frames = [image.convert("P"), draw_shape("red", "circle", 96, rng).convert("P")]
            frames[0].save(buffer, name, save_all=True, append_images=frames[1:])
        elif suffix == "tif":
            image.save(buffer, name, compression="tiff_deflate")
        else:
            image.save(buffer, name, quality=80)
        files[suffix] = buffer.getvalue()
    return files


def bit_flips(data: bytes, rng: random.Random, _other: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(min(len(out), 256)) if rng.random() < 0.5 else None
        position = rng.randrange(len(out)) if position is None else position
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncation(data: bytes, rng: random.Random, _other: bytes) -> bytes:
    return data[: rng.randrange(1, len(data))]


def splice(data: bytes, rng: random.Random, other: bytes) -> bytes:
    return data[: rng.randrange(1, len(data))] + other[rng.randrange(len(other)) :]


def repeated_chunk(data: bytes, rng: random.Random, _other: bytes) -> bytes:
    start = rng.randrange(len(data))
    chunk = data[start : start + rng.randint(1, 512)]
    return data[:start] + chunk * rng.randint(2, 50) + data[start:]


def header_field(data: bytes, rng: random.Random, _other: bytes) -> bytes:
    """Set the width or the height in the format's header to an extreme value."""
    value, second = rng.choice([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]), rng.randrange(2)
    out = bytearray(data)
    if data[:2] == b"\xff\xd8":  # JPEG: a frame header (SOF0-3) holds height, then width
        sof = next((i for i in range(2, len(data) - 9) if data[i : i + 2] in _SOF), None)
        if sof is not None:
            out[sof + 5 + 2 * second : sof + 7 + 2 * second] = struct.pack(">H", value & 0xFFFF)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":  # PNG: IHDR width, height; its CRC made right again
        out[16 + 4 * second : 20 + 4 * second] = struct.pack(">I", value)
        out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
    elif data[:3] == b"GIF":  # GIF: logical screen width, height
        out[6 + 2 * second : 8 + 2 * second] = struct.pack("<H", value & 0xFFFF)
    elif data[:2] in (b"II", b"MM"):  # TIFF: ImageWidth or ImageLength in the first IFD
        order = "<" if data[:2] == b"II" else ">"
        ifd = struct.unpack(order + "I", data[4:8])[0]
        count = struct.unpack(order + "H", data[ifd : ifd + 2])[0]
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            if struct.unpack(order + "H", data[entry : entry + 2])[0] == 256 + second:
                out[entry + 8 : entry + 12] = struct.pack(order + "I", value)
    elif (ispe := data.find(b"ispe")) > 0:  # HEIF: the image spatial extents property
        out[ispe + 8 + 4 * second : ispe + 12 + 4 * second] = struct.pack(">I", value)
    return bytes(out)


MUTATIONS: dict[str, Callable[[bytes, random.Random, bytes], bytes]] = {
    "bit_flips": bit_flips,
    "truncation": truncation,
    "splice": splice,
    "repeated_chunk": repeated_chunk,
    "header_field": header_field,
}


def write_round(folder: Path, number: int, count: int, rng: random.Random) -> list[Path]:
    """`count` mutated files plus one unmutated control per format (`control.*`)."""
    folder.mkdir(parents=True)
    sources = originals()
    for suffix, data in sources.items():
        (folder / f"control.{suffix}").write_bytes(data)
    for index in range(count):
        suffix = rng.choice(list(sources))
        name = rng.choice(list(MUTATIONS))
        other = sources[rng.choice(list(sources))]
        data = MUTATIONS[name](sources[suffix], rng, other) or b"\x00"
        (folder / f"r{number:03d}-{index:04d}-{name}.{suffix}").write_bytes(data)
    return sorted(folder.iterdir())


def index(config: Path, folder: Path) -> tuple[int, dict]:
    """`pixseek index FOLDER --json` in its own process: exit code and report."""
    env = os.environ | {"PIXSEEK_CONFIG": str(config)}
    command = [sys.executable, "-m", "pixseek.cli", "index", str(folder), "--json"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
        return run.returncode, {}
    return 0, json.loads(run.stdout)


def fuzz(mode: str, options: Options, workdir: Path, model: Path) -> Mode:
    """Rounds of mutated files through one decode mode until `options.seconds` have passed."""
    base = workdir / mode
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    decode = {"decode": mode, "workers": 2}
    config = write_config(base / "config.json", model, base / "data", indexer=decode)
    rng, outcome = random.Random(options.seed), Mode(mode)
    started = time.monotonic()
    while time.monotonic() - started < options.seconds:
        folder = base / f"round-{outcome.rounds:03d}"
        paths = write_round(folder, outcome.rounds, options.per_round, rng)
        code, _report = index(config, folder)
        outcome.exit_codes.append(code)
        outcome.rounds += 1
        outcome.files += len(paths)
        catalog = Catalog(base / "data" / "catalog.sqlite3")
        for path in paths:
            row = catalog.by_path(str(path))
            if row is None or (row.status != "indexed" and not row.reason):
                outcome.unrecorded.append(path.name)
            elif row.status == "indexed":
                outcome.indexed += 1
            else:
                outcome.failed += 1
                outcome.reasons[row.reason.split(":")[0][:60]] += 1
                if path.name.startswith("control."):
                    outcome.controls_failed.append(f"{path.name}: {row.reason}")
        catalog.close()
    outcome.seconds = time.monotonic() - started
    state = inspect_afresh(config, lose=0, seed=0)
    outcome.chroma_matches = state["chroma"] == state["indexed"]
    return outcome


def problems(outcome: Mode) -> list[str]:
    """Broken promises of one mode, in words."""
    found = []
    if any(outcome.exit_codes):
        found.append(f"{outcome.mode}: `pixseek index` exit codes {outcome.exit_codes}")
    if outcome.unrecorded:
        found.append(f"{outcome.mode}: files with no row or no reason: {outcome.unrecorded[:5]}")
    if outcome.controls_failed:
        found.append(f"{outcome.mode}: valid files failed: {outcome.controls_failed[:5]}")
    if not outcome.chroma_matches:
        found.append(f"{outcome.mode}: Chroma does not hold exactly the indexed files")
    return found


def report(outcomes: list[Mode]) -> None:
    for outcome in outcomes:
        print(
            f"{outcome.mode}: {outcome.rounds} rounds, {outcome.files} files in "
            f"{outcome.seconds:.0f} s: {outcome.indexed} indexed, {outcome.failed} failed with "
            f"a reason, {len(outcome.unrecorded)} unrecorded; exit codes "
            f"{sorted(set(outcome.exit_codes))}"
        )
        for reason, count in outcome.reasons.most_common(8):
            print(f"  {count:>6}  {reason}")
    found = [text for outcome in outcomes for text in problems(outcome)]
    print("\n".join(["", "PROBLEMS:", *found]) if found else "\nall checks passed")


def main() -> int:
    description = __doc__.split("\n")[0]
    options, workdir = parse_options(Options(), description, ROOT / "bench/out/decode_fuzz")
    model = tiny_model(workdir / "model")
    outcomes = [fuzz(mode, options, workdir, model) for mode in MODES]
    report(outcomes)
    return 1 if any(problems(outcome) for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
