"""Serve latency benchmark: a real `pixseek serve` (CPU, or --device cuda) with a full-size
random ViT-B/32.

Three figures, printed as a table:

1. write → searchable: 50 JPEGs (1600x1200) dropped one at a time into the watched folder; the
   time from the start of the copy until the record is indexed (polled every 10 ms through
   `/api/images/{id}`, which reads the catalog; the Chroma upsert follows in the same batch).
   Afterwards every dropped file is checked to be its own top hit by image search.
   `/api/status` latency at the larger size is timed as well.
2. `/api/search` latency (text encoding included) with 10k and 100k records. The records are
   synthetic (random unit vectors, realistic metadata) and are written through pixseek's own
   catalog and store layer, so the server serves them like any other.
3. 50 concurrent clients for 30 s, half text searches and half similar-by-id, while files keep
   arriving in the watched folder: requests/s, p50/p99 and errors.

Run from the repository root (several minutes; 100k inserts run at about 1,000/s here):

    HF_HUB_OFFLINE=1 python bench/serve_latency.py
    HF_HUB_OFFLINE=1 python bench/serve_latency.py --settle 0.3 --small 2000 --large 20000

Other work on the machine skews every figure: each part waits for the CPUs to go quiet first
and reports how many cores other processes kept busy while it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import numpy as np
import psutil
from index_cpu import WORDS, base_env, ensure_model, fresh_dir, make_image, wait_for_quiet

from pixseek.catalog import INDEXED, FileRow, record_id
from pixseek.config import load_config
from pixseek.library import Library

DIM = 512  # CLIPConfig() projection_dim
CHUNK = 5000
CAMERAS = ("Pixel 7", "iPhone 13", "Canon EOS R6", "Nikon Z6", "Sony A7 III", None)


@dataclass
class Figure:
    """One row of the result table."""

    name: str
    seconds: list[float]
    other_cores: float
    extra: str = ""
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.count = len(self.seconds)

    def ms(self, percentile: float) -> float:
        return float(np.percentile(self.seconds, percentile) * 1000) if self.seconds else 0.0


# --------------------------------------------------------------------------- inputs


def synthetic_rows(root: str, start: int, count: int, rng: np.random.Generator) -> list[FileRow]:
    """Rows that look like a phone-and-camera photo library."""
    rows = []
    for number in range(start, start + count):
        taken = 1.2e9 + float(rng.uniform(0, 5.5e8))
        year = time.gmtime(taken).tm_year
        rel = f"{year}/{time.gmtime(taken).tm_mon:02d}/IMG_{number:06d}.jpg"
        rows.append(
            FileRow(
                id=record_id(root, rel),
                root=root,
                rel_path=rel,
                path=f"{root}/{rel}",
                size=int(rng.integers(800_000, 9_000_000)),
                mtime_ns=int(taken * 1e9),
                content_hash=hashlib.blake2b(str(number).encode()).hexdigest()[:40],
                status=INDEXED,
                width=4032,
                height=3024,
                format="JPEG",
                taken_at=taken,
                camera=CAMERAS[number % len(CAMERAS)],
            )
        )
    return rows


def add_records(config: Path, root: str, start: int, count: int) -> float:
    """Write `count` synthetic records through the catalog and the store; returns records/s."""
    rng = np.random.default_rng(start)
    library = Library(load_config(config).settings, writer=True, serving=True)
    started = time.perf_counter()
    try:
        for first in range(start, start + count, CHUNK):
            rows = synthetic_rows(root, first, min(CHUNK, start + count - first), rng)
            vectors = rng.standard_normal((len(rows), DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            embeddings = {
                row.content_hash: vector for row, vector in zip(rows, vectors, strict=True)
            }
            library.catalog.save(rows, library.model_key, embeddings)
            library.publish(rows)
            print(f"  {first + len(rows) - start}/{count} records", end="\r", flush=True)
    finally:
        library.close()
    print()
    return count / (time.perf_counter() - started)


def ensure_jpegs(folder: Path, count: int) -> list[Path]:
    """Photo-like 1600x1200 JPEGs to drop into the watched folder (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = folder / f"photo_{number:03d}.jpg"
        if not path.is_file():
            buffer = io.BytesIO()
            make_image(10_000 + number).save(buffer, "JPEG", quality=90)
            path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(
    config: Path, watched: Path, env: dict[str, str], log: Path
) -> Iterator[tuple[str, int]]:
    """`pixseek serve` in a subprocess; yields (URL, pid) once the startup reconcile is done."""
    port = free_port()
    command = [sys.executable, "-m", "pixseek.cli", "serve", str(watched), "--port", str(port)]
    started = time.perf_counter()
    with log.open("ab") as errors:
        server = subprocess.Popen(command, env=env | {"PIXSEEK_CONFIG": str(config)}, stderr=errors)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"pixseek serve exited with {server.returncode}; see {log}")
                try:
                    if client.get("/api/status").json()["watch"]["last_reconcile"]:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        print(f"  server ready in {time.perf_counter() - started:.1f} s (pid {server.pid})")
        yield base, server.pid
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class Contention:
    """Cores that processes other than this one and the server kept busy during a part."""

    def __init__(self, server_pid: int) -> None:
        self.tree = [psutil.Process(), psutil.Process(server_pid)]

    def __enter__(self) -> Contention:
        self.before = (self._busy(), self._ours(), time.perf_counter())
        return self

    def __exit__(self, *_exc: object) -> None:
        busy, ours, started = self.before
        wall = time.perf_counter() - started
        self.cores = max(0.0, (self._busy() - busy) - (self._ours() - ours)) / wall

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return times.user + times.nice + times.system + times.irq + times.softirq

    def _ours(self) -> float:
        total = 0.0
        for process in self.tree:
            for member in [process, *process.children(recursive=True)]:
                try:
                    times = member.cpu_times()
                    total += times.user + times.system + times.children_user
                    total += times.children_system
                except psutil.Error:
                    pass
        return total


# --------------------------------------------------------------------------- the parts


def queries(count: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 6))) for _ in range(count)]


def search_latency(base: str, count: int) -> list[float]:
    """Sequential text searches on a warm server (10 warm-up queries first)."""
    texts = queries(count + 10, random.Random(count))
    seconds = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for number, text in enumerate(texts):
            started = time.perf_counter()
            response = client.get("/api/search", params={"q": text, "k": 20})
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if number >= 10:
                seconds.append(elapsed)
    return seconds


def status_latency(base: str, count: int) -> list[float]:
    """Sequential `/api/status` requests (counts, store, failures, watcher)."""
    seconds = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get("/api/status").raise_for_status()
            seconds.append(time.perf_counter() - started)
    return seconds


def write_to_searchable(base: str, watched: Path, photos: list[Path]) -> list[float]:
    """Drop files one at a time; seconds from the start of each copy until it is indexed."""
    seconds = []
    with httpx.Client(base_url=base, timeout=120) as client:
        for number, photo in enumerate(photos):
            name = f"drop_{number:03d}.jpg"
            record = record_id(str(watched), name)
            started = time.perf_counter()
            shutil.copyfile(photo, watched / name)
            while client.get(f"/api/images/{record}").status_code != 200:
                if time.perf_counter() - started > 60:
                    raise SystemExit(f"{name} was not indexed within 60 s")
                time.sleep(0.01)
            seconds.append(time.perf_counter() - started)
            time.sleep(0.2)
    return seconds


def finding_themselves(base: str, watched: Path, photos: list[Path]) -> int:
    """How many dropped files are their own top hit by image search (so they are in Chroma)."""
    found = 0
    with httpx.Client(base_url=base, timeout=120) as client:
        for number, photo in enumerate(photos):
            files = {"file": (photo.name, photo.read_bytes())}
            hits = client.post("/api/search/image", params={"k": 1}, files=files).json()
            found += hits["results"][0]["id"] == record_id(str(watched), f"drop_{number:03d}.jpg")
    return found


async def load(
    base: str, ids: list[str], clients: int, seconds: float
) -> tuple[list[float], Counter[str]]:
    """`clients` loops of text or similar-by-id requests for `seconds`: latencies and errors."""
    rng = random.Random(7)
    texts = queries(500, rng)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                if rng.random() < 0.5:
                    request = client.get("/api/search", params={"q": rng.choice(texts), "k": 20})
                else:
                    request = client.get(f"/api/images/{rng.choice(ids)}/similar", params={"k": 20})
                started = time.perf_counter()
                try:
                    response = await request
                    if response.status_code != 200:
                        errors[f"{response.status_code} {response.text[:80]}"] += 1
                except httpx.HTTPError as error:
                    errors[type(error).__name__] += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, errors


def under_load(
    base: str, watched: Path, photos: list[Path], ids: list[str], args: argparse.Namespace
) -> tuple[list[float], str]:
    """The load test while photos keep arriving every 0.3 s: latencies and a summary."""
    stop, dropped = threading.Event(), [0]

    def drop() -> None:
        for number, photo in enumerate(photos):
            if stop.wait(0.3):
                return
            shutil.copyfile(photo, watched / f"load_{number:03d}.jpg")
            dropped[0] += 1

    threading.Thread(target=drop, daemon=True).start()
    started = time.perf_counter()
    latencies, errors = asyncio.run(load(base, ids, args.clients, args.seconds))
    wall = time.perf_counter() - started
    stop.set()
    summary = (
        f"{len(latencies) / wall:.1f} req/s, {errors.total()} errors {dict(errors)}, "
        f"{dropped[0]} files dropped meanwhile"
    )
    return latencies, summary


def timed(name: str, pid: int, max_wait: float, work: Callable[[], list[float]]) -> Figure:
    """One part, run once the machine is quiet, with the contention it met."""
    wait_for_quiet(max_wait)
    with Contention(pid) as busy:
        seconds = work()
    return Figure(name, seconds, busy.cores)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/serve_latency"))
    parser.add_argument("--small", type=int, default=10_000, help="records, first size (10k)")
    parser.add_argument("--large", type=int, default=100_000, help="records, second size (100k)")
    parser.add_argument("--settle", type=float, default=0.5, help="watch.settle_s (0.5)")
    parser.add_argument("--drops", type=int, default=50, help="files dropped one at a time (50)")
    parser.add_argument("--queries", type=int, default=200, help="searches per size (200)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="load duration (30)")
    parser.add_argument("--max-wait", type=float, default=300.0, help="wait for idle CPUs (300)")
    parser.add_argument("--device", default="cpu", help="model.device of the server (cpu)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    workdir = args.workdir.expanduser().absolute()
    env = base_env()
    os.environ["HF_HUB_OFFLINE"] = "1"
    model = workdir / "model"
    print(f"model: random ViT-B/32 in {model} ({'built' if ensure_model(model) else 'reused'})")
    photos = ensure_jpegs(workdir / "photos", args.drops + 100)
    data, watched, archive = workdir / "data", workdir / "watched", str(workdir / "archive")
    fresh_dir(data)
    fresh_dir(watched)
    config = workdir / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "data_dir": str(data),
                "model": {"name": str(model), "device": args.device},
                "watch": {"settle_s": args.settle},
            }
        )
    )
    log = workdir / "serve.log"
    log.unlink(missing_ok=True)
    figures: list[Figure] = []

    print(f"writing {args.small} synthetic records ...")
    print(f"  {add_records(config, archive, 0, args.small):.0f} records/s")
    with serving(config, watched, env, log) as (base, pid):
        search = partial(search_latency, base, args.queries)
        figures.append(timed(f"/api/search, {args.small:,} records", pid, args.max_wait, search))

    print(f"writing {args.large - args.small} more synthetic records ...")
    print(f"  {add_records(config, archive, args.small, args.large - args.small):.0f} records/s")
    with serving(config, watched, env, log) as (base, pid):
        search = partial(search_latency, base, args.queries)
        figures.append(timed(f"/api/search, {args.large:,} records", pid, args.max_wait, search))
        status = partial(status_latency, base, 20)
        figures.append(timed(f"/api/status, {args.large:,} records", pid, 0, status))

        drops, later = photos[: args.drops], photos[args.drops :]
        name = f"write → searchable, settle {args.settle} s"
        figure = timed(name, pid, args.max_wait, partial(write_to_searchable, base, watched, drops))
        figure.extra = f"{finding_themselves(base, watched, drops)}/{len(drops)} find themselves"
        figures.append(figure)

        rows = synthetic_rows(archive, 0, min(2000, args.large), np.random.default_rng(0))
        outcome: list[str] = []

        def loaded() -> list[float]:
            latencies, summary = under_load(base, watched, later, [row.id for row in rows], args)
            outcome.append(summary)
            return latencies

        name = f"{args.clients} clients x {args.seconds:.0f} s"
        figure = timed(name, pid, args.max_wait, loaded)
        indexed = httpx.get(f"{base}/api/status", timeout=120).json()["indexed"]
        figure.extra = f"{outcome[0]}, {indexed:,} indexed"
        figures.append(figure)

    print()
    print(f"{'part':<38}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'others':>8}  notes")
    for figure in figures:
        print(
            f"{figure.name:<38}{figure.count:>6}{figure.ms(50):>9.1f}{figure.ms(95):>9.1f}"
            f"{figure.ms(99):>9.1f}{figure.other_cores:>8.2f}  {figure.extra}"
        )
    print()
    print("others = cores that other processes on the machine kept busy during the part")
    print(f"cpu cores: {os.cpu_count()}; server log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
