"""Crash loop: kill -9 a real `pixseek serve` at random moments while it indexes and answers.

Each cycle starts `pixseek serve` on a folder of small JPEGs (more arrive every cycle), client
threads query /api/search all the time, and the server is killed with SIGKILL at a random
moment: during startup (`--startup-kills` of the cycles), or once a random share of the files
still to embed is cached, plus up to `--max-uptime` seconds (so while it indexes, or idle).
With no server running, the data directory is then inspected directly:

- Chroma holds no record the catalog lacks (the catalog is always written first);
- records the catalog holds but Chroma lacks ("behind": not yet published, or lost by Chroma)
  are counted; `--lose K` also deletes K records from Chroma, as if Chroma had lost writes.
  The next start's repair must restore exactly that many (it logs the number);
- each server's `embedded` counter (/api/status, polled) never exceeds the embeddings it added to
  the catalog's cache: nothing cached is embedded again.

After the last cycle the server runs until the index converges: catalog ids == Chroma ids ==
the files on disk, each once, one cached embedding per file, and no query failed while the
server was up.

    HF_HUB_OFFLINE=1 python bench/crash_loop.py                    # 20 cycles, 2,000 files
    HF_HUB_OFFLINE=1 python bench/crash_loop.py --cycles 3 --files 100 --add 10
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from chromadb.api.shared_system_client import SharedSystemClient
from serve_latency import free_port
from tiny_library import QUERIES, ROOT, parse_options, tiny_model, write_config, write_jpegs

from pixseek.catalog import Catalog, record_id
from pixseek.config import load_config
from pixseek.embedder import collection_name, model_key
from pixseek.store import Store

RESTORED = re.compile(r"restoring (\d+) record")


@dataclass
class Options:
    cycles: int = 20
    files: int = 2000
    add: int = 25
    lose: int = 5
    max_uptime: float = 0.5  # after the chosen point of the indexing
    startup_kills: float = 0.2  # share of kills at a random moment of startup
    clients: int = 3
    seed: int = 1


@dataclass
class Request:
    started: float
    ended: float
    ok: bool
    what: str


@dataclass
class Life:
    """One server process: when it started, answered first, was killed, and what it logged."""

    spawned: float
    up: float | None = None
    killed: float = float("inf")
    indexing_at_kill: bool = False
    embedded: int = 0
    cache_at_start: int = 0
    over_counted: int = 0  # polls where `embedded` exceeded the cache it had added
    log: Path | None = None


@dataclass
class Result:
    cycles: list[dict] = field(default_factory=list)
    files: int = 0
    converged_s: float = 0.0
    final: dict = field(default_factory=dict)
    queries_ok: int = 0
    failed_while_up: list[str] = field(default_factory=list)
    failed_while_down: int = 0
    downtime_s: float = 0.0
    orphans: int = 0
    lives: list[Life] = field(default_factory=list)


def inspect(config: Path, lose: int = 0, seed: int = 0) -> dict:
    """State of a data directory no server holds; `lose` deletes that many Chroma records."""
    settings = load_config(config).settings
    catalog = Catalog(settings.catalog_path)
    store = Store(settings.store, settings.chroma_path, collection_name(settings.model.name))
    key = model_key(settings.model.name)
    indexed = sorted(row.id for row in catalog.indexed(key))
    chroma = list(store.ids())
    lost = random.Random(seed).sample(sorted(chroma), min(lose, len(chroma)))
    store.delete(lost)
    rows, paths = catalog.db.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM files").fetchone()
    counts = catalog.counts(key)
    catalog.close()
    return {
        "indexed": indexed,
        "chroma": sorted(set(chroma) - set(lost)),
        "chroma_duplicates": len(chroma) - len(set(chroma)),
        "lost": len(lost),
        "file_rows": rows,
        "distinct_paths": paths,
        "failed": counts["failed"],
        "cached": counts["cached_embeddings"],
    }


def inspect_afresh(config: Path, lose: int, seed: int) -> dict:
    """`inspect`, then drop this process's Chroma client (Chroma caches one per path)."""
    try:
        return inspect(config, lose, seed)
    finally:
        SharedSystemClient.clear_system_cache()


def cached_embeddings(catalog: Path) -> int:
    with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]


class Clients:
    """Query threads that run across restarts, recording every request's outcome."""

    def __init__(self, count: int, seed: int) -> None:
        self.base = ""
        self.requests: list[Request] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._loop, args=(random.Random(seed + n),), daemon=True)
            for n in range(count)
        ]

    def __enter__(self) -> Clients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _loop(self, rng: random.Random) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.wait(0.05):
                if not self.base:
                    continue
                started = time.monotonic()
                try:
                    params = {"q": rng.choice(QUERIES), "k": 10}
                    response = client.get(f"{self.base}/api/search", params=params)
                    ok, what = response.status_code == 200, str(response.status_code)
                except httpx.HTTPError as error:
                    ok, what = False, type(error).__name__
                self.requests.append(Request(started, time.monotonic(), ok, what))


def watch_life(base: str, life: Life, catalog: Path, stop: threading.Event) -> None:
    """Note when the server first answers; poll its `embedded` counter against the cache."""
    with httpx.Client(timeout=10) as client:
        while not stop.wait(0.2):
            try:
                status = client.get(f"{base}/api/status").json()
            except (httpx.HTTPError, ValueError):
                continue
            if life.up is None:
                life.up = time.monotonic()
            watch = status["watch"]
            life.embedded = watch["embedded"]
            life.indexing_at_kill = watch["last_reconcile"] is None or watch["queue"]["decode"] > 0
            if life.embedded > cached_embeddings(catalog) - life.cache_at_start:
                life.over_counted += 1


def wait_for_cache(catalog: Path, target: int, server: subprocess.Popen) -> None:
    """Until the catalog caches `target` embeddings (or the server exits, or 5 minutes)."""
    deadline = time.monotonic() + 300
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if cached_embeddings(catalog) >= target:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.05)


def spawn(config: Path, folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`pixseek serve FOLDER` on a free port, its stderr in `log`; returns it and its URL."""
    port = free_port()
    command = [sys.executable, "-m", "pixseek.cli", "serve", str(folder), "--port", str(port)]
    env = os.environ | {"PIXSEEK_CONFIG": str(config)}
    with log.open("wb") as errors:
        server = subprocess.Popen(command, env=env, stderr=errors, stdout=subprocess.DEVNULL)
    return server, f"http://127.0.0.1:{port}"


def kill(server: subprocess.Popen) -> int:
    """SIGKILL the server; returns how many of its helpers outlived it by 15 s (then killed)."""
    helpers = psutil.Process(server.pid).children(recursive=True)
    server.send_signal(signal.SIGKILL)
    server.wait()
    _gone, alive = psutil.wait_procs(helpers, timeout=15)
    for process in alive:
        process.kill()
    return len(alive)


def converge(base: str, expected: int, timeout: float) -> dict:
    """Wait until every file is indexed or failed and Chroma has them all; the last status."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            try:
                status = client.get(f"{base}/api/status").json()
            except (httpx.HTTPError, ValueError):
                status = None
            if status and status["watch"]["last_reconcile"]:
                done = status["indexed"] + status["failed"] == expected
                if done and status["store"]["records"] == status["indexed"]:
                    return status
            time.sleep(0.3)
    raise SystemExit(f"the index did not converge within {timeout:.0f} s")


def run(options: Options, workdir: Path, model: Path) -> Result:
    """The crash loop; every check's figures are in the Result (see `check`)."""
    rng = random.Random(options.seed)
    folder, data = workdir / "photos", workdir / "data"
    config = write_config(workdir / "config.json", model, data, watch={"settle_s": 0.3})
    catalog = load_config(config).settings.catalog_path
    write_jpegs(folder, 0, options.files)
    result = Result(files=options.files)
    state = {"indexed": [], "chroma": [], "cached": 0}
    with Clients(options.clients, options.seed) as clients:
        for cycle in range(options.cycles + 1):
            final = cycle == options.cycles
            log = workdir / f"serve-{cycle:02d}.log"
            life = Life(spawned=time.monotonic(), cache_at_start=state["cached"], log=log)
            server, base = spawn(config, folder, log)
            clients.base = base
            stop = threading.Event()
            poller = threading.Thread(target=watch_life, args=(base, life, catalog, stop))
            poller.start()
            if not final:
                write_jpegs(folder, result.files, options.add)
                result.files += options.add
            if final:
                started = time.monotonic()
                result.final = converge(base, result.files, timeout=600)
                result.converged_s = time.monotonic() - started
                time.sleep(0.5)  # one more poll of the counter at rest
                stop.set()
                poller.join()
                life.killed = time.monotonic()
                server.send_signal(signal.SIGINT)
                server.wait(timeout=120)
            else:
                if rng.random() < options.startup_kills:
                    time.sleep(rng.uniform(0.5, 4.0))  # during startup, up or not
                else:
                    to_embed = result.files - state["cached"]
                    target = state["cached"] + rng.randint(1, to_embed) if to_embed > 0 else 0
                    wait_for_cache(catalog, target, server)  # a random point of the indexing
                    time.sleep(rng.uniform(0.0, options.max_uptime))
                stop.set()
                poller.join()
                life.killed = time.monotonic()
                result.orphans += kill(server)
            clients.base = ""
            result.lives.append(life)
            restored = [int(n) for n in RESTORED.findall(log.read_text(errors="replace"))]
            before = state
            state = inspect_afresh(config, 0 if final else options.lose, options.seed + cycle)
            behind_before = len(set(before["indexed"]) - set(before["chroma"]))
            result.cycles.append(
                {
                    "cycle": cycle,
                    "up_s": round(life.killed - (life.up or life.killed), 2),
                    "killed_while": "startup"
                    if life.up is None
                    else ("indexing" if life.indexing_at_kill else "idle"),
                    "behind_at_start": behind_before,
                    "restored_by_repair": sum(restored) if restored else None,
                    "indexed": len(state["indexed"]),
                    "chroma": len(state["chroma"]),
                    "stray": len(set(state["chroma"]) - set(state["indexed"])),
                    "behind": len(set(state["indexed"]) - set(state["chroma"])),
                    "lost_on_purpose": state["lost"],
                    "chroma_duplicates": state["chroma_duplicates"],
                    "file_rows": state["file_rows"],
                    "distinct_paths": state["distinct_paths"],
                    "cached": state["cached"],
                    "embedded": life.embedded,
                    "over_counted_polls": life.over_counted,
                }
            )
    _tally_requests(result, clients.requests)
    expected = {record_id(str(folder), path.name) for path in folder.iterdir()}
    result.final = result.final | {
        "on_disk": len(expected),
        "catalog_is_disk": set(state["indexed"]) == expected,
        "chroma_is_disk": set(state["chroma"]) == expected,
        "cached": state["cached"],
    }
    return result


def _tally_requests(result: Result, requests: list[Request]) -> None:
    for request in requests:
        up = [
            life
            for life in result.lives
            if life.up is not None and life.up <= request.started and request.ended < life.killed
        ]
        if request.ok:
            result.queries_ok += 1
        elif up:
            result.failed_while_up.append(request.what)
        else:
            result.failed_while_down += 1
    result.downtime_s = sum((life.up or life.killed) - life.spawned for life in result.lives)


def problems(result: Result) -> list[str]:
    """Every broken promise, in words (empty when the run was clean)."""
    found = []
    for cycle in result.cycles:
        name = f"cycle {cycle['cycle']}"
        if cycle["stray"]:
            found.append(f"{name}: {cycle['stray']} Chroma records the catalog lacks")
        if cycle["chroma_duplicates"] or cycle["file_rows"] != cycle["distinct_paths"]:
            found.append(f"{name}: a record or a file row twice")
        restored = cycle["restored_by_repair"]
        if restored is not None and restored != cycle["behind_at_start"]:
            found.append(f"{name}: repair restored {restored}, {cycle['behind_at_start']} behind")
        if cycle["over_counted_polls"]:
            found.append(f"{name}: embedded more than it added to the cache (re-embedding)")
    final = result.final
    if not (final["catalog_is_disk"] and final["chroma_is_disk"]):
        found.append("the final index is not exactly the files on disk")
    if final["cached"] != final["on_disk"]:
        found.append(f"{final['cached']} cached embeddings for {final['on_disk']} distinct files")
    last = result.cycles[-1]
    if last["embedded"] != last["cached"] - result.lives[-1].cache_at_start:
        found.append("the last server's embedded count differs from what it added to the cache")
    if result.failed_while_up:
        found.append(f"queries failed while the server was up: {result.failed_while_up[:5]}")
    return found


def report(result: Result) -> None:
    print(
        f"{'cycle':>5} {'killed while':>13} {'up s':>6} {'behind@start':>12} {'restored':>9} "
        f"{'indexed':>8} {'chroma':>7} {'behind':>7} {'lost':>5} {'cached':>7} {'embedded':>9}"
    )
    for cycle in result.cycles:
        restored = cycle["restored_by_repair"]
        print(
            f"{cycle['cycle']:>5} {cycle['killed_while']:>13} {cycle['up_s']:>6.1f} "
            f"{cycle['behind_at_start']:>12} {'-' if restored is None else restored:>9} "
            f"{cycle['indexed']:>8} {cycle['chroma']:>7} {cycle['behind']:>7} "
            f"{cycle['lost_on_purpose']:>5} {cycle['cached']:>7} {cycle['embedded']:>9}"
        )
    kills = [cycle["killed_while"] for cycle in result.cycles[:-1]]
    print(
        f"\n{len(kills)} kills ({kills.count('startup')} in startup, "
        f"{kills.count('indexing')} while indexing, {kills.count('idle')} idle); "
        f"{result.files} files; converged {result.converged_s:.1f} s after the last start"
    )
    restored = [c["restored_by_repair"] for c in result.cycles if c["restored_by_repair"]]
    print(f"records restored by repair at starts: {sum(restored)} in {len(restored)} starts")
    embedded = sum(life.embedded for life in result.lives)
    print(
        f"embedded (counted by the servers, up to their last poll): {embedded}; "
        f"cached at the end: {result.final['cached']} for {result.final['on_disk']} files"
    )
    print(
        f"queries: {result.queries_ok} ok, {len(result.failed_while_up)} failed while up, "
        f"{result.failed_while_down} failed while down; time down (start to first answer): "
        f"{result.downtime_s:.1f} s; helper processes that outlived a kill: {result.orphans}"
    )
    found = problems(result)
    print("\n".join(["", "PROBLEMS:", *found]) if found else "\nall checks passed")


def main() -> int:
    description = __doc__.split("\n")[0]
    options, workdir = parse_options(Options(), description, ROOT / "bench/out/crash_loop")
    for stale in ("photos", "data"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    model = tiny_model(workdir / "model")
    started = time.monotonic()
    result = run(options, workdir, model)
    report(result)
    print(f"wall time {time.monotonic() - started:.0f} s; logs in {workdir}")
    return 1 if problems(result) else 0


if __name__ == "__main__":
    sys.exit(main())
