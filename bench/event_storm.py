"""Event storm: 10,000 files copied into a watched root at once, then 2,000 moved and 2,000
deleted at once. The index must converge to exactly the files on disk (catalog and Chroma),
moves must keep their embeddings, and each phase must converge within a bounded time.

The watch loop runs as `pixseek watch` runs it (the real watchdog observer, in a thread of this
process) with the tiny CLIP, so the figures are about events, settling and bookkeeping.

    HF_HUB_OFFLINE=1 python bench/event_storm.py
    HF_HUB_OFFLINE=1 python bench/event_storm.py --files 2000 --moves 400 --deletes 400
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tiny_library import ROOT, parse_options, tiny_model, write_config, write_jpegs

from pixseek.catalog import record_id
from pixseek.config import load_config
from pixseek.indexer.pipeline import IndexReport
from pixseek.indexer.status import WatchStatus
from pixseek.indexer.watch import watch
from pixseek.library import Library


@dataclass
class Options:
    files: int = 10_000
    moves: int = 2000
    deletes: int = 2000
    settle_s: float = 0.5
    timeout_s: float = 1800.0
    seed: int = 1


@dataclass
class Phase:
    name: str
    events_s: float  # how long the copies, moves or deletes themselves took
    converged_s: float  # from the first change until the index matched the disk
    on_disk: int


@dataclass
class Result:
    phases: list[Phase] = field(default_factory=list)
    reports: list[IndexReport] = field(default_factory=list)
    status: dict = field(default_factory=dict)
    cached: int = 0

    def total(self, what: str) -> int:
        return sum(getattr(report, what) for report in self.reports)


def on_disk(root: Path) -> set[str]:
    """Record ids of the files under `root`."""
    return {
        record_id(str(root), str(path.relative_to(root)))
        for path in root.rglob("*")
        if path.is_file()
    }


def matches_disk(library: Library, root: Path) -> bool:
    """Catalog and Chroma hold exactly the files under `root`, nothing failed."""
    expected = on_disk(root)
    indexed = {row.id for row in library.catalog.indexed(library.model_key)}
    if indexed != expected or library.catalog.failures():
        return False
    return library.store.count() == len(expected) and set(library.store.ids()) == expected


def converge(library: Library, root: Path, started: float, timeout: float) -> float:
    """Seconds from `started` until the index matches the disk."""
    while not matches_disk(library, root):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"the index did not converge within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def run(options: Options, workdir: Path, model: Path) -> Result:
    """Copy, then move and delete, each at once; time until the index matches the disk."""
    source, root = workdir / "source", workdir / "live"
    if len(list(source.glob("*.jpg"))) != options.files:
        shutil.rmtree(source, ignore_errors=True)
        write_jpegs(source, 0, options.files)
    for stale in (root, workdir / "data"):
        shutil.rmtree(stale, ignore_errors=True)
    root.mkdir(parents=True)
    config = write_config(
        workdir / "config.json", model, workdir / "data", watch={"settle_s": options.settle_s}
    )
    library = Library(load_config(config).settings, writer=True)
    result, status, stop = Result(), WatchStatus(), threading.Event()
    args = (library, [str(root)], stop, result.reports.append, status)
    watcher = threading.Thread(target=watch, args=args, daemon=True)
    try:
        watcher.start()
        while not result.reports:
            time.sleep(0.05)  # the startup reconcile of the empty root

        started = time.monotonic()
        for path in sorted(source.glob("*.jpg")):
            shutil.copyfile(path, root / path.name)
        copied = time.monotonic() - started
        seconds = converge(library, root, started, options.timeout_s)
        result.phases.append(Phase("copy", copied, seconds, options.files))

        names = sorted(path.name for path in root.glob("*.jpg"))
        random.Random(options.seed).shuffle(names)
        moved, deleted = names[: options.moves], names[options.moves :][: options.deletes]
        (root / "moved").mkdir()
        started = time.monotonic()
        for name in moved:
            os.rename(root / name, root / "moved" / name)
        for name in deleted:
            (root / name).unlink()
        changed = time.monotonic() - started
        seconds = converge(library, root, started, options.timeout_s)
        left = options.files - len(deleted)
        result.phases.append(Phase("move + delete", changed, seconds, left))
        result.status = status.as_dict()
        result.cached = library.catalog.counts(library.model_key)["cached_embeddings"]
    finally:
        stop.set()
        watcher.join(timeout=120)
        library.close()
    return result


def problems(result: Result, options: Options) -> list[str]:
    """Broken promises, in words (the convergence itself is checked by `run`).

    A move whose two events reach different runs (watchdog pairs a rename's halves only when
    they arrive together) is applied as a delete and an add; the add takes the embedding from
    the cache, so it costs no model time and is counted apart.
    """
    found = []
    if result.total("embedded") != options.files or result.cached != options.files:
        found.append(
            f"{result.total('embedded')} embedded, {result.cached} cached "
            f"for {options.files} distinct files"
        )
    split = options.moves - result.total("moved")
    if result.total("deleted") != options.deletes + split or split < 0:
        found.append(f"{result.total('deleted')} deleted, {options.deletes} deletes made")
    if result.total("added") != options.files + split:
        found.append(f"{result.total('added')} added, {options.files} copied")
    return found


def report(result: Result, options: Options) -> None:
    print(f"{'phase':<15}{'files after':>12}{'changes took s':>16}{'converged s':>13}")
    for phase in result.phases:
        print(
            f"{phase.name:<15}{phase.on_disk:>12}{phase.events_s:>16.1f}{phase.converged_s:>13.1f}"
        )
    status = result.status
    print(
        f"\nruns: {len(result.reports)}, embedded {result.total('embedded')}, added "
        f"{result.total('added')}, moved {result.total('moved')}, deleted "
        f"{result.total('deleted')}, failed {result.total('failed')}; moves applied as delete + "
        f"add from the cache: {options.moves - result.total('moved')}; queue overflows "
        f"{status['overflows']}, full rescans {status['rescans']}"
    )
    found = problems(result, options)
    print("\n".join(["", "PROBLEMS:", *found]) if found else "\nall checks passed")


def main() -> int:
    defaults = Options()
    description = __doc__.split("\n")[0]
    options, workdir = parse_options(defaults, description, ROOT / "bench/out/event_storm")
    result = run(options, workdir, tiny_model(workdir / "model"))
    report(result, options)
    return 1 if problems(result, options) else 0


if __name__ == "__main__":
    sys.exit(main())
