"""One indexing run: repair, scan, plan, then decode → batch → embed → write, then deletes.

A full run (`index_roots`) scans whole roots; the watcher's runs (`index_paths`) look only at the
paths that events marked dirty, so a burst costs what it touched, not the size of the library.

Each embedded batch is committed to the catalog (rows and vectors) before it is handed to the
publisher thread that writes Chroma, so a run killed at any point resumes without embedding
anything twice, and the model never waits for Chroma.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from pixseek.catalog import FAILED, INDEXED, FileRow, content_hash
from pixseek.embedder import (
    MODEL_FILE_ERRORS,
    Embedder,
    image_geometry,
    resolve_batch_size,
    resolve_devices,
    resolve_dtype,
)
from pixseek.imaging import JpegHeader, PreparedImage
from pixseek.indexer.batched import (
    Embedded,
    embed_batched,
    takes,
    warm_decoders,
    warm_libraries,
    warm_model,
)
from pixseek.indexer.committer import Committer
from pixseek.indexer.decode import DecodeFailure, DecodePool, worker_count
from pixseek.indexer.jpeg_decoders import gpu_decoder_available
from pixseek.indexer.lane_models import LaneModel, LoadingModel
from pixseek.indexer.plan import Plan, make_plan, unreadable_reason
from pixseek.indexer.publisher import Publisher
from pixseek.indexer.read_processes import ReadProcesses, start_read_processes
from pixseek.indexer.repair import repair
from pixseek.indexer.scan import RootScan, locate, normalise_root, scan_paths, scan_root
from pixseek.indexer.tagging import sync_tags, tag_embeddings
from pixseek.library import Library

log = logging.getLogger(__name__)
_TIMING_LOCK = threading.Lock()


class Progress(Protocol):
    """Where a run reports progress (the CLI draws a bar; tests pass nothing)."""

    def start(self, phase: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def embedded(self, count: int) -> None:
        """`count` more images went through the model, and their vectors are in the cache."""


class _Silent:
    def start(self, phase: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def embedded(self, count: int) -> None:
        pass


@dataclass
class IndexReport:
    """What a run did; `embedded` counts images that went through the model.

    `cached_s` is when every embedding was in the catalog's cache; `elapsed` when every record
    was also searchable in Chroma. `phases` says where the seconds went, one after another;
    `steps` breaks them down further, in seconds summed over the threads that ran each step:
    loading and warming up the model beside `plan` (the `model` phase is how long the run still
    waited for it), and within `embed` waiting for reads, decoding, resizing and the model,
    and committing to the catalog.
    """

    added: int = 0
    updated: int = 0
    moved: int = 0
    deleted: int = 0
    unchanged: int = 0
    failed: int = 0
    embedded: int = 0
    repaired: int = 0
    retagged: int = 0
    decoded: int = 0
    deferred: int = 0
    cached_s: float = 0.0
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)
    deferred_paths: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str, step: bool = False) -> Iterator[None]:
        """Add the seconds the block takes to `phases[name]` (or `steps[name]`)."""
        into = self.steps if step else self.phases
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            with _TIMING_LOCK:  # steps are timed on several threads at once
                into[name] = into.get(name, 0.0) + spent

    @property
    def changed(self) -> bool:
        """Whether the run changed anything or has something to say."""
        return bool(
            self.added or self.updated or self.moved or self.deleted or self.failed or self.notes
        )

    @property
    def images_per_s(self) -> float:
        """Images decoded and written per second of the whole run."""
        return self.decoded / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        """The one-line summary printed at the end of a run."""
        return (
            f"added {self.added}, updated {self.updated}, moved {self.moved}, "
            f"deleted {self.deleted}, unchanged {self.unchanged}, failed {self.failed} "
            f"in {self.elapsed:.1f} s ({self.images_per_s:.1f} images/s, "
            f"{self.embedded} embedded)"
        )

    def as_dict(self) -> dict[str, object]:
        """Machine-readable form for --json (the deferred paths are only counted)."""
        values = asdict(self)
        del values["deferred_paths"]
        for timings in ("phases", "steps"):
            values[timings] = {name: round(spent, 3) for name, spent in values[timings].items()}
        return values | {"images_per_s": round(self.images_per_s, 2)}


def index_roots(
    library: Library,
    roots: Sequence[Path | str],
    progress: Progress | None = None,
    allow_deletes: bool = False,
    settle_s: float = 0.0,
    early_readers: ReadProcesses | None = None,
) -> IndexReport:
    """Bring the catalog and Chroma in line with the files under `roots`.

    With `settle_s`, files modified more recently than that are left for a later run.
    `early_readers` (from `read_processes.start_early`) read the files if the run wants read
    processes; they are ended when the run ends either way.
    """
    started = time.perf_counter()
    report = IndexReport()
    with report.phase("repair"):
        library.confirm_claim()
        report.repaired = repair(library).changed
        report.retagged = sync_tags(library).changed
    with report.phase("scan"):
        scans = [scan_root(normalise_root(root), library.settings.indexer) for root in roots]
    return _run(library, scans, report, started, progress, allow_deletes, settle_s, early_readers)


def index_paths(
    library: Library,
    paths: Iterable[str],
    roots: Sequence[str],
    progress: Progress | None = None,
    settle_s: float = 0.0,
) -> IndexReport:
    """Bring just these absolute paths under `roots` up to date.

    A path may be a file, a folder (walked whole), or a path that is gone: every catalog row at
    or under it then counts as vanished, so a moved folder keeps its embeddings (matched by
    content hash) and a deleted one goes. The delete guard applies as in a full run.
    """
    started = time.perf_counter()
    by_root: dict[str, list[str]] = {}
    for path in paths:
        found = locate(path, roots)
        if found:
            by_root.setdefault(found[0], []).append(found[1])
    settings = library.settings.indexer
    report = IndexReport()
    with report.phase("scan"):
        library.confirm_claim()
        scans = [scan_paths(root, rels, settings) for root, rels in by_root.items()]
    return _run(library, scans, report, started, progress, False, settle_s)


def _run(
    library: Library,
    scans: Sequence[RootScan],
    report: IndexReport,
    started: float,
    progress: Progress | None,
    allow_deletes: bool,
    settle_s: float,
    early_readers: ReadProcesses | None = None,
) -> IndexReport:
    progress = progress or _Silent()
    batched = uses_batched_decode(library)
    startup = _Startup(library, report, batched, early_readers)
    try:
        _plan_and_index(library, scans, report, started, progress, allow_deletes, settle_s, startup)
    finally:
        startup.finish()
    report.elapsed = time.perf_counter() - started
    return report


def _plan_and_index(
    library: Library,
    scans: Sequence[RootScan],
    report: IndexReport,
    started: float,
    progress: Progress,
    allow_deletes: bool,
    settle_s: float,
    startup: _Startup,
) -> None:
    batched = startup.batched
    progress.start("hashing", sum(len(scan.files) for scan in scans))
    with report.phase("plan"):
        plan = make_plan(
            scans,
            library.catalog,
            library.model_key,
            library.settings.indexer.delete_guard_share,
            allow_deletes,
            on_hashed=progress.advance,
            settle_s=settle_s,
            on_changes=startup.start,
            hash_new=not batched,  # the batched path hashes new files as it reads them
        )
    report.unchanged = plan.unchanged + len(plan.touched)
    report.deferred, report.deferred_paths = len(plan.deferred), plan.deferred
    report.notes = plan.notes
    with Publisher(library) as publisher:
        run = _Run(library, plan, report, publisher, progress, batched)
        run.apply_moves_and_touches()
        run.record_failures(plan.failures)
        if plan.to_decode:
            if batched:  # lanes read, decode and resize while the model loads
                models = startup.lane_models()
            else:
                with report.phase("model"):  # what loading took beyond the plan
                    startup.wait()
                models = library.embedders
            progress.start("indexing", len(plan.to_decode))
            bulk = len(plan.to_decode) > library.store.batch_size
            with report.phase("embed"), publisher.bulk() if bulk else nullcontext():
                run.decode_and_embed(models, startup.readers)
        report.cached_s = time.perf_counter() - started
        run.apply_deletes()
        with report.phase("publish"):
            publisher.close()


class _Startup:
    """What a run starts while files are hashed: loading the model on a thread; for the batched
    path also warming the model up, and on another thread the JPEG decoders (both start-ups are
    mostly GPU driver work, so they overlap), and, for a large run, read processes (or takes
    the ones started early)."""

    def __init__(
        self,
        library: Library,
        report: IndexReport,
        batched: bool,
        early_readers: ReadProcesses | None = None,
    ) -> None:
        self.library = library
        self.report = report
        self.batched = batched
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._models: Future[list[Embedder]] = Future()
        self._early_readers = early_readers
        self.readers: ReadProcesses | None = None

    def start(self, changes: int = 0) -> None:
        """Begin loading in the background, for a run of about `changes` files to index."""
        steps = [self._load_model]
        if self.batched:
            settings = self.library.settings.indexer
            cores = worker_count(settings.workers)
            limits = self.library.limits
            self.readers = start_read_processes(
                changes, cores, settings.readers, limits, self._early_readers
            )
            self._early_readers = None
            if self.readers is not None and self.readers.decoding:  # they warm their decoders
                steps.append(self._warm_libraries)
            else:
                steps.append(self._warm_decoders)
        for step in steps:
            thread = threading.Thread(
                target=self._guard,
                args=(step,),
                name=f"pixseek{step.__name__.replace('_', '-')}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BaseException as error:  # raised on the indexing thread by wait()
            self._errors.append(error)
            if not self._models.done():
                self._models.set_exception(error)

    def _load_model(self) -> None:
        with self.report.phase("load_model", step=True):
            embedders = self.library.embedders
        if self.batched:
            with self.report.phase("warm_model", step=True):
                warm_model(embedders)
        self._models.set_result(embedders)

    def lane_models(self) -> list[LaneModel]:
        """Stand-ins for the models being loaded, one per indexing device, that lanes can
        start with; the models themselves (once loaded) if their geometry can't be read alone."""
        if not self._threads:
            self.start()
        settings = self.library.settings.model
        try:
            spec = image_geometry(settings.name)
        except MODEL_FILE_ERRORS:
            self.wait()  # the loader's error says what is wrong with the model
            return list(self.library.embedders)
        models: list[LaneModel] = []
        for position, device in enumerate(resolve_devices(settings.device)):
            batch_size = resolve_batch_size(settings.batch_size, device)
            models.append(LoadingModel(device, spec, batch_size, self._models, position))
        return models

    def _warm_decoders(self) -> None:
        settings = self.library.settings
        with self.report.phase("warm_decoders", step=True):
            warm_decoders(resolve_devices(settings.model.device), settings.indexer.gpu_decoder)

    def _warm_libraries(self) -> None:
        settings = self.library.settings.model
        devices = resolve_devices(settings.device)
        with self.report.phase("warm_libraries", step=True):
            warm_libraries(devices, resolve_dtype(settings.dtype, devices[0]))

    def wait(self) -> None:
        """Block until the model (and decoders) are ready."""
        if not self._threads:
            self.start()
        self.finish()
        if self._errors:
            raise self._errors[0]

    def finish(self) -> None:
        """Let a load that started end (the run may not have needed the model after all), and
        the read processes."""
        for thread in self._threads:
            thread.join()
        for readers in (self.readers, self._early_readers):
            if readers is not None:
                readers.close()
        self.readers = self._early_readers = None


def uses_batched_decode(library: Library) -> bool:
    """`indexer.decode`: batched JPEG decoding on the model's device, or decode workers only."""
    mode = library.settings.indexer.decode
    if mode == "auto":
        device = resolve_devices(library.settings.model.device)[0]
        return device.type == "cuda" and gpu_decoder_available()
    return mode == "batched"


class _Run:
    """The writing half of one run: catalog first, then Chroma through the publisher."""

    def __init__(
        self,
        library: Library,
        plan: Plan,
        report: IndexReport,
        publisher: Publisher,
        progress: Progress,
        batched: bool,
    ) -> None:
        self.library, self.plan, self.report = library, plan, report
        self.publisher, self.progress, self.batched = publisher, progress, batched

    def apply_moves_and_touches(self) -> None:
        for old, new in self.plan.moves:
            self.library.catalog.move(old.id, new)
        self.library.catalog.save(self.plan.touched)
        self.publisher.upsert([new for _, new in self.plan.moves] + self.plan.touched)
        self.publisher.delete([old.id for old, _ in self.plan.moves])  # after: never unfindable
        self.report.moved = len(self.plan.moves)

    def record_failures(self, rows: Sequence[FileRow]) -> None:
        if not rows:
            return
        self.library.catalog.save(rows)
        self.publisher.delete([row.id for row in rows])
        self.report.failed += len(rows)

    def refuse(self, row: FileRow, reason: str, retryable: bool) -> None:
        log.warning("cannot index %s: %s", row.path, reason)
        self.progress.advance(1)
        self.record_failures([replace(row, status=FAILED, reason=reason, retryable=retryable)])

    def apply_deletes(self) -> None:
        ids = [row.id for row in self.plan.deletes]
        self.library.catalog.delete(ids)
        self.publisher.delete(ids)
        self.report.deleted = sum(1 for row in self.plan.deletes if row.status == INDEXED)

    def decode_and_embed(
        self, models: Sequence[LaneModel], readers: ReadProcesses | None = None
    ) -> None:
        """JPEGs through the batched path (when it is on; read by `readers` where given), the
        rest through the decode workers."""
        rows = self.plan.to_decode
        if self.batched:
            catalog, model = self.library.catalog, self.library.model_key
            cached = catalog.cached_hashes(
                model, (row.content_hash for row in rows if row.content_hash)
            )
            fresh_jpegs: list[FileRow] = []
            others: list[FileRow] = []
            for row in rows:
                fresh = takes(row) and row.content_hash not in cached
                (fresh_jpegs if fresh else others).append(row)
            settings = self.library.settings.indexer
            with Committer(self._write_embedded, catalog.release_thread) as committer:
                embed_batched(
                    fresh_jpegs,
                    models,
                    self.library.limits,
                    settings.workers,
                    on_embedded=committer.put,
                    on_leftover=others.append,
                    on_refused=lambda row, error: self.refuse(row, error.reason, error.retryable),
                    decoder=settings.gpu_decoder,
                    timed=functools.partial(self.report.phase, step=True),
                    cached=functools.partial(catalog.cached_hashes, model),
                    readers=readers,
                )
            rows = others
        self._decode_with_workers(self._hashed(rows))

    def _write_embedded(self, embedded: list[Embedded]) -> None:
        with self.report.phase("commit", step=True):
            rows = [_described(row, header) for row, header, _ in embedded]
            embeddings = {row.content_hash: v for row, _, v in embedded if v is not None}
            self._commit(rows, embeddings)

    def _hashed(self, rows: Sequence[FileRow]) -> list[FileRow]:
        """Rows with their content hash (the plan leaves new files to the batched path, which
        hands back what it cannot take); a file that cannot be read is recorded as failed."""
        hashed = []
        for row in rows:
            if row.content_hash is None:
                try:
                    row = row.with_hash(content_hash(row.path))
                except OSError as error:
                    if reason := unreadable_reason(error):
                        self.refuse(row, reason, retryable=False)
                    continue
            hashed.append(row)
        return hashed

    def _decode_with_workers(self, rows: Sequence[FileRow]) -> None:
        if not rows:
            return
        settings = self.library.settings.indexer
        batch: list[tuple[FileRow, np.ndarray]] = []
        phashes: dict[str, int] = {}  # saved with each batch; dedup computes any that are missing
        with DecodePool(
            settings.workers, self.library.limits, self.library.embedder.spec, settings.queue_size
        ) as pool:
            for row, result in pool.decode((row, row.path) for row in rows):
                if isinstance(result, DecodeFailure):
                    self.refuse(row, result.reason, result.retryable)
                    continue
                batch.append((_described(row, result), result.pixels))
                if result.phash is not None:
                    phashes[row.content_hash] = result.phash
                if len(batch) >= self.library.embedder.batch_size:
                    self._embed_pixels(batch)
                    self.library.catalog.save_phashes(phashes)
                    batch, phashes = [], {}
            self._embed_pixels(batch)
            self.library.catalog.save_phashes(phashes)

    def _embed_pixels(self, batch: list[tuple[FileRow, np.ndarray]]) -> None:
        if not batch:
            return
        model = self.library.model_key
        cached = self.library.catalog.cached_hashes(model, (row.content_hash for row, _ in batch))
        fresh: dict[str, np.ndarray] = {}
        for row, pixels in batch:
            if row.content_hash not in cached and row.content_hash not in fresh:
                fresh[row.content_hash] = pixels
        embeddings = {}
        if fresh:
            vectors = self.library.embedder.encode_pixels(list(fresh.values()))
            embeddings = dict(zip(fresh, vectors, strict=True))
        self._commit([row for row, _ in batch], embeddings)

    def _commit(self, rows: list[FileRow], embeddings: dict[str, np.ndarray]) -> None:
        if embeddings:
            tag_embeddings(self.library, embeddings)
        self.library.catalog.save(rows, self.library.model_key, embeddings)
        self.report.embedded += len(embeddings)  # counted once cached: a crash loses no count
        self.progress.embedded(len(embeddings))
        self.publisher.upsert(rows)
        self.progress.advance(len(rows))
        self.report.decoded += len(rows)
        for row in rows:
            if row.id in self.plan.replaced_ids:
                self.report.updated += 1
            else:
                self.report.added += 1


def _described(row: FileRow, image: PreparedImage | JpegHeader) -> FileRow:
    return row.indexed(image.width, image.height, image.format, image.taken_at, image.camera)
