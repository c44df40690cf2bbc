"""Load: 100 concurrent clients for 60 s against a real `pixseek serve` while it indexes.

The clients mix text searches (GET /api/search), image searches (POST /api/search/image with a
JPEG upload) and similar-by-id (GET /api/images/{id}/similar), while photos keep arriving in
the watched folder. Printed: requests/s, p50/p99 per kind, and every error (target: none, and
never a 5xx). The model is a full-size random ViT-B/32 on the CPU (`--tiny` for the tiny CLIP).

    HF_HUB_OFFLINE=1 python bench/load.py
    HF_HUB_OFFLINE=1 python bench/load.py --clients 20 --seconds 20 --library 100 --tiny
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
from index_cpu import base_env, ensure_model, fresh_dir
from serve_latency import Contention, ensure_jpegs, queries, serving
from tiny_library import ROOT, tiny_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench/out/load")
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (100)")
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (60)")
    parser.add_argument("--library", type=int, default=300, help="photos indexed first (300)")
    parser.add_argument("--arrivals", type=float, default=0.3, help="s between new photos (0.3)")
    parser.add_argument("--tiny", action="store_true", help="the tiny CLIP instead of ViT-B/32")
    return parser.parse_args()


class Load:
    """Client loops of mixed requests; latencies per kind and every error."""

    def __init__(self, base: str, ids: list[str], uploads: list[bytes], seed: int = 7) -> None:
        self.base, self.ids, self.uploads = base, ids, uploads
        self.rng = random.Random(seed)
        self.texts = queries(500, self.rng)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()

    def request(self, client: httpx.AsyncClient, kind: str):
        """One request of `kind` (a coroutine)."""
        if kind == "text":
            return client.get("/api/search", params={"q": self.rng.choice(self.texts), "k": 20})
        if kind == "image":
            files = {"file": ("query.jpg", self.rng.choice(self.uploads), "image/jpeg")}
            return client.post("/api/search/image", params={"k": 20}, files=files)
        return client.get(f"/api/images/{self.rng.choice(self.ids)}/similar", params={"k": 20})

    async def run(self, clients: int, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=self.base, timeout=300, limits=limits) as client:

            async def one_client() -> None:
                while time.perf_counter() < deadline:
                    kind = self.rng.choice(("text", "image", "similar"))
                    started = time.perf_counter()
                    try:
                        response = await self.request(client, kind)
                        if response.status_code != 200:
                            self.errors[f"{kind} {response.status_code}"] += 1
                    except httpx.HTTPError as error:
                        self.errors[f"{kind} {type(error).__name__}"] += 1
                    self.latencies[kind].append(time.perf_counter() - started)

            await asyncio.gather(*(one_client() for _ in range(clients)))


def keep_arriving(photos: list[Path], watched: Path, every: float, stop: threading.Event) -> list:
    """Copy photos into the watched folder one by one until `stop`; returns the copied list."""
    copied: list[Path] = []

    def drop() -> None:
        for number, photo in enumerate(photos):
            if stop.wait(every):
                return
            target = watched / f"arrival_{number:04d}.jpg"
            shutil.copyfile(photo, target)
            copied.append(target)

    threading.Thread(target=drop, daemon=True).start()
    return copied


def main() -> int:
    args = parse_args()
    workdir = args.workdir.absolute()
    model = workdir / ("tiny-model" if args.tiny else "model")
    if args.tiny:
        tiny_model(model)
    else:
        ensure_model(model)
    photos = ensure_jpegs(workdir / "photos", args.library + int(args.seconds / args.arrivals) + 1)
    data, watched = fresh_dir(workdir / "data"), fresh_dir(workdir / "watched")
    for photo in photos[: args.library]:
        shutil.copyfile(photo, watched / photo.name)
    config = workdir / "config.yaml"
    settings = {"data_dir": str(data), "model": {"name": str(model), "device": "cpu"}}
    config.write_text(json.dumps(settings | {"watch": {"settle_s": 0.5}}))
    log = workdir / "serve.log"
    print(f"indexing {args.library} photos, then {args.clients} clients for {args.seconds:.0f} s")
    with serving(config, watched, base_env(), log) as (base, pid):
        found = httpx.get(f"{base}/api/search", params={"q": "a photo", "k": 200}, timeout=300)
        ids = [hit["id"] for hit in found.json()["results"]]
        uploads = [photo.read_bytes() for photo in photos[-20:]]
        stop = threading.Event()
        copied = keep_arriving(photos[args.library :], watched, args.arrivals, stop)
        load = Load(base, ids, uploads)
        started = time.perf_counter()
        with Contention(pid) as busy:
            asyncio.run(load.run(args.clients, args.seconds))
        wall = time.perf_counter() - started
        stop.set()
        status = httpx.get(f"{base}/api/status", timeout=300).json()
    total = sum(len(values) for values in load.latencies.values())
    print(f"\n{'kind':<10}{'n':>7}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for kind, values in sorted(load.latencies.items()):
        errors = sum(count for key, count in load.errors.items() if key.startswith(kind))
        p50, p99 = np.percentile(values, 50) * 1000, np.percentile(values, 99) * 1000
        print(
            f"{kind:<10}{len(values):>7}{len(values) / wall:>8.1f}{p50:>9.0f}{p99:>9.0f}{errors:>8}"
        )
    every = [value for values in load.latencies.values() for value in values]
    p50, p99 = np.percentile(every, 50) * 1000, np.percentile(every, 99) * 1000
    print(
        f"{'all':<10}{total:>7}{total / wall:>8.1f}{p50:>9.0f}{p99:>9.0f}{load.errors.total():>8}"
    )
    server_errors = sum(count for key, count in load.errors.items() if key.split()[-1][0] == "5")
    print(
        f"\nerrors: {dict(load.errors) or 'none'}; 5xx: {server_errors}; {len(copied)} photos "
        f"arrived meanwhile, {status['indexed']} indexed at the end; other processes kept "
        f"{busy.cores:.2f} cores busy; cpu cores: {os.cpu_count()}"
    )
    return 1 if load.errors else 0


if __name__ == "__main__":
    sys.exit(main())
