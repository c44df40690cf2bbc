"""Scale: N synthetic records through pixseek's catalog and store, then query speed and recall.

Inserts N clustered unit 512-d vectors with pixseek's record metadata (folders, dates, formats,
sizes, a flagged tag; built by bench/filters.py's `build`, so every batch goes through
`Catalog.save` and `Library.publish` like an index run) into embedded Chroma or a `chroma run`
server, and prints:

- the insert rate over each tenth of the run (or each 100k records), and the process's RSS;
- the peak RSS (of this process, and of the Chroma server in http mode) and the disk size;
- top-10 query p50/p95 through `search_vector` with no filter and with broad to narrow filters,
  each with recall@10 against exact brute force (numpy over every vector, masked by the
  generated facts); the unfiltered case over 1,000 queries;
- the HNSW settings used (`store.hnsw`).

Run from the repository root:

    python bench/scale.py --count 100000                 # embedded Chroma
    python bench/scale.py --count 100000 --mode http     # a `chroma run` server it starts
    python bench/scale.py                                # 1,000,000 records: 20+ min on 2 cores
    python bench/scale.py --count 100000 --search-ef 200 --m 32
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parents[1]))

from filters import MODEL, _p, _row, _unit, build, cases, recall, timed

from pixseek.config import Settings
from pixseek.library import Library
from pixseek.search.filters import Filters
from pixseek.search.query import Page, search_vector
from tests.chroma_server import running_chroma

DIM = 512


def exact_top10(vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Indices of the exact top 10 among the masked vectors, per query (chunked for memory)."""
    candidates = np.flatnonzero(mask)
    pool = vectors[candidates]
    found = []
    for start in range(0, len(queries), 50):
        scores = queries[start : start + 50] @ pool.T
        top = np.argpartition(-scores, min(10, len(candidates) - 1), axis=1)[:, :10]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        found.extend(candidates[np.take_along_axis(top, order, axis=1)])
    return found


def disk_bytes(path: Path) -> int:
    """Bytes used under a directory (what `du` reports)."""
    used = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(used.stdout.split()[0])


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Insertion:
    """Prints the insert rate over each step of the run, with resident memory."""

    def __init__(self, step: int, server: psutil.Process | None) -> None:
        self.step, self.server = step, server
        self.started = self.mark = time.perf_counter()
        self.done = 0
        self.server_peak_mb = 0.0
        print(f"{'records':>10} {'rate/s':>8} {'overall/s':>9} {'RSS MB':>8} {'server MB':>9}")

    def __call__(self, done: int) -> None:
        if self.server is not None:
            rss = self.server.memory_info().rss / 2**20
            self.server_peak_mb = max(self.server_peak_mb, rss)
        if done // self.step == self.done // self.step:
            return
        now = time.perf_counter()
        rate = (done - self.done) / (now - self.mark)
        overall = done / (now - self.started)
        server = f"{self.server_peak_mb:9.0f}" if self.server is not None else f"{'':9}"
        own = psutil.Process().memory_info().rss / 2**20
        print(f"{done:10,} {rate:8,.0f} {overall:9,.0f} {own:8.0f} {server}", flush=True)
        self.done, self.mark = done, now


def query_table(library: Library, facts: dict[str, np.ndarray], count: int, queries: int) -> None:
    """Top-10 p50/p95 and recall@10 of each filter case through pixseek's search path."""
    ids = np.array([_row(facts, index).id for index in range(count)])
    rng = np.random.default_rng(1)
    picks = rng.integers(0, count, queries)
    noise = 0.3 * rng.standard_normal((queries, DIM)) / DIM**0.5
    vectors = _unit(facts["vectors"][picks] + noise).astype(np.float32)
    print(f"\n{'query (top 10)':42} {'share':>7} {'queries':>7} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'recall@10':>9}")  # fmt: skip
    for case in cases():
        sample = vectors if not case.filters.active else vectors[: max(queries // 10, 20)]
        mask = case.mask(facts)
        truths = [list(ids[top]) for top in exact_top10(facts["vectors"], sample, mask)]

        def run(vector: np.ndarray, filters: Filters = case.filters) -> list[str]:
            return [hit.id for hit in search_vector(library, vector, Page(k=10), filters)]

        times, answers = timed(run, sample)
        print(
            f"{case.name:42} {mask.mean():7.2%} {len(sample):7} {_p(times, 50):7.1f} "
            f"{_p(times, 95):7.1f} {recall(answers, truths):9.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=("embedded", "http"), default="embedded")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--m", type=int, default=16, help="store.hnsw.m")
    parser.add_argument("--construction-ef", type=int, default=100)
    parser.add_argument("--search-ef", type=int, default=100)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="pixseek-bench-scale-"))
    hnsw = {"m": options.m, "construction_ef": options.construction_ef}
    hnsw["search_ef"] = options.search_ef
    with ExitStack() as stack:
        if not options.workdir:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        store: dict[str, object] = {"mode": options.mode, "hnsw": hnsw}
        server = None
        if options.mode == "http":
            store["port"] = stack.enter_context(running_chroma(work / "server"))
            server = psutil.Process().children()[-1]
        settings = Settings(data_dir=work, model={"name": MODEL}, store=store)
        library = Library(settings, writer=True)
        stack.callback(library.close)
        print(f"{options.count:,} records, {DIM}-d, {options.mode} Chroma at "
              f"{library.store.location}; store.hnsw {hnsw}")  # fmt: skip
        insertion = Insertion(min(100_000, max(options.count // 10, 1)), server)
        started = time.perf_counter()
        facts = build(library, options.count, DIM, options.seed, insertion)
        elapsed = time.perf_counter() - started
        assert library.store.count() == options.count, "Chroma lost records"
        chroma_dir = work / "server" if server else settings.chroma_path
        print(
            f"\ninserted {options.count:,} in {elapsed:,.0f} s: {options.count / elapsed:,.0f}/s"
            f"\npeak RSS: this process {peak_rss_mb():,.0f} MB (the {options.count:,} vectors "
            f"it keeps for ground truth: {facts['vectors'].nbytes / 2**20:,.0f} MB)"
            + (f", Chroma server {insertion.server_peak_mb:,.0f} MB" if server else "")
            + f"\ndisk: Chroma {disk_bytes(chroma_dir) / 2**20:,.0f} MB, catalog "
            f"{disk_bytes(settings.catalog_path) / 2**20:,.0f} MB "
            f"(of which cached vectors {options.count * DIM * 4 / 2**20:,.0f} MB)"
        )
        query_table(library, facts, options.count, options.queries)
        if server:
            print(f"Chroma server RSS after queries: {server.memory_info().rss / 2**20:,.0f} MB")


if __name__ == "__main__":
    main()
