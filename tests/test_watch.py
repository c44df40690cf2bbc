"""Live watching with the real watchdog observer: per-path runs for copies, slow writes, moves and
deletes; unmounted roots; event-queue overflow; the inotify instance limit."""

from __future__ import annotations

import ctypes
import errno
import io
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pixseek.config import load_config
from pixseek.indexer.pipeline import IndexReport
from pixseek.indexer.status import WatchStatus
from pixseek.indexer.watch import watch
from pixseek.library import Library
from pixseek.lock import StoreOwnedError
from tests.chroma_server import free_port, running_chroma
from tests.conftest import Cli, write_config
from tests.test_store_http import http_config
from tests.tinyclip import classes, draw_shape

MAX_USER_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@dataclass
class Watching:
    root: Path
    library: Library
    reports: list[IndexReport]
    status: WatchStatus
    errors: list[BaseException] = field(default_factory=list)  # what ended the loop, if anything

    def paths(self) -> set[str]:
        return {row.path for row in self.library.catalog.indexed(self.library.model_key)}

    def embedded(self) -> int:
        return sum(report.embedded for report in self.reports)


@contextmanager
def watching(
    tmp_path: Path,
    model: Path,
    starting: AbstractContextManager | None = None,
    **settings: object,
) -> Iterator[Watching]:
    """A watch loop on `tmp_path/live` in a thread; `starting` is held until the observer runs."""
    root = tmp_path / "live"
    root.mkdir(exist_ok=True)
    config = write_config(tmp_path / "c.yaml", model, tmp_path / "data")
    loaded = load_config(config, {"watch.settle_s": 0.5, **settings}).settings
    library = Library(loaded, writer=True)
    live = Watching(root, library, [], WatchStatus())
    stop = threading.Event()
    args = (library, [str(root)], stop, live.reports.append, live.status)

    def run() -> None:
        try:
            watch(*args)
        except BaseException as error:  # raised below unless the test takes it
            live.errors.append(error)

    thread = threading.Thread(target=run)
    try:
        with starting or nullcontext():
            thread.start()
            wait_for(lambda: live.status.running or not thread.is_alive(), "the observer")
        wait_for(lambda: live.reports, "the startup reconcile")
        yield live
    finally:
        stop.set()
        thread.join(timeout=30)
        library.close()
    if live.errors:
        raise live.errors[0]


@pytest.fixture
def live(tmp_path: Path, random_clip: Path) -> Iterator[Watching]:
    with watching(tmp_path, random_clip) as running:
        yield running


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def jpeg(number: int) -> bytes:
    colour, shape = classes()[number % 12]
    buffer = io.BytesIO()
    draw_shape(colour, shape, 96, random.Random(number)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_bursts_moves_and_slow_writes_touch_only_dirty_paths(live):
    startup = live.status.last_reconcile
    incoming = live.root / "incoming"
    incoming.mkdir()
    for number in range(200):
        (incoming / f"{number:03d}.jpg").write_bytes(jpeg(number))
    wait_for(lambda: len(live.paths()) == 200, "200 copied files to be indexed")
    wait_for(lambda: live.embedded() == 200, "the burst's reports")
    assert live.library.store.count() == 200

    shutil.move(incoming, live.root / "sorted")
    wait_for(lambda: sum(report.moved for report in live.reports) == 200, "the folder move")
    assert all("/sorted/" in path for path in live.paths())
    assert len(live.paths()) == 200 and live.library.store.count() == 200
    assert live.embedded() == 200, "a moved folder keeps its embeddings"

    (live.root / "sorted" / "new.jpg").write_bytes(jpeg(500))
    wait_for(lambda: any(report.added == 1 for report in live.reports), "one new file")
    [one] = [report for report in live.reports if report.added == 1]
    assert one.unchanged == 0, "only the dirty path is looked at, not the other 200 files"

    slow, data = live.root / "slow.jpg", jpeg(999)
    with open(slow, "wb") as handle:
        for start in range(0, len(data), 400):
            handle.write(data[start : start + 400])
            handle.flush()
            time.sleep(0.05)
    wait_for(lambda: str(slow) in live.paths(), "the slowly written file")
    assert live.library.catalog.by_path(str(slow)).size == len(data)
    wait_for(lambda: live.embedded() >= 202, "the slow file's report")
    time.sleep(1.0)  # late events for the slow file must not embed it again
    assert live.embedded() == 202, "the slow file is embedded once, complete"
    assert live.library.catalog.failures() == []
    assert sum(report.failed for report in live.reports) == 0
    assert live.status.last_reconcile == startup, "no full rescan was needed"


def test_deletes_apply_to_files_and_whole_folders(live, tmp_path):
    seeds = {"": 0, "a": 100, "b": 200}
    for folder in seeds:
        (live.root / folder).mkdir(exist_ok=True)
        for number in range(6 if not folder else 3):
            (live.root / folder / f"{number}.jpg").write_bytes(jpeg(seeds[folder] + number))
    wait_for(lambda: len(live.paths()) == 12, "12 files to be indexed")

    (live.root / "0.jpg").unlink()
    wait_for(lambda: len(live.paths()) == 11, "the file delete")
    assert str(live.root / "0.jpg") not in live.paths()

    shutil.rmtree(live.root / "a")
    wait_for(lambda: len(live.paths()) == 8, "the folder delete")
    shutil.move(live.root / "b", tmp_path / "elsewhere")
    wait_for(lambda: len(live.paths()) == 5, "the folder moved out of the watched tree")
    assert not any("/a/" in path or "/b/" in path for path in live.paths())
    wait_for(lambda: live.library.store.count() == 5, "Chroma to drop them too")  # within 0.5 s


def test_a_vanished_root_deletes_nothing_and_is_watched_again(live, tmp_path):
    root = str(live.root)
    for number in range(6):
        (live.root / f"{number}.jpg").write_bytes(jpeg(number))
    wait_for(lambda: len(live.paths()) == 6, "6 files to be indexed")
    assert live.status.as_dict()["roots"] == [{"root": root, "state": "watching"}]

    shutil.move(live.root, tmp_path / "unplugged")
    wait_for(lambda: live.status.root_states[root] == "missing", "the root to be missing")
    time.sleep(1.5)  # several settle periods: anything queued has run by now
    assert len(live.paths()) == 6 and live.library.store.count() == 6
    assert any("root is missing" in note for note in live.status.notes)

    shutil.move(tmp_path / "unplugged", live.root)
    wait_for(lambda: live.status.root_states[root] == "watching", "the root to come back")
    (live.root / "back.jpg").write_bytes(jpeg(77))
    wait_for(lambda: len(live.paths()) == 7, "a file added after the root came back")


def test_an_overflowing_queue_rescans_and_indexes_everything_once(tmp_path, random_clip):
    with watching(tmp_path, random_clip, **{"watch.max_pending": 10}) as live:
        for number in range(80):
            (live.root / f"{number:02d}.jpg").write_bytes(jpeg(number))
        wait_for(lambda: len(live.paths()) == 80, "80 files to be indexed")
        wait_for(lambda: live.embedded() == 80, "the reports")
        time.sleep(1.0)  # late events for the same files must not embed anything again
        status = live.status.as_dict()
        assert live.embedded() == 80 and live.library.store.count() == 80
        assert status["overflows"] >= 1 and status["rescans"] >= 1
        assert any("watch.max_pending" in note for note in status["notes"])


@contextmanager
def inotify_instances_exhausted() -> Iterator[None]:
    """Hold every inotify instance this user may still create (closed again on exit)."""
    limit = int(MAX_USER_INSTANCES.read_text())
    if limit > 10_000:
        pytest.skip(f"fs.inotify.max_user_instances is {limit}: too many to exhaust in a test")
    libc = ctypes.CDLL(None, use_errno=True)
    held: list[int] = []
    try:
        while (fd := libc.inotify_init1(os.O_CLOEXEC)) >= 0:
            held.append(fd)
            assert len(held) <= limit, "the instance limit was not enforced"
        assert ctypes.get_errno() == errno.EMFILE
        yield
    finally:
        for fd in held:
            os.close(fd)


@pytest.mark.skipif(not MAX_USER_INSTANCES.exists(), reason="needs Linux inotify")
def test_the_inotify_limit_falls_back_to_polling(tmp_path, random_clip):
    with watching(
        tmp_path,
        random_clip,
        starting=inotify_instances_exhausted(),
        **{"watch.poll_interval_s": 0.3},
    ) as live:
        status = live.status.as_dict()
        assert status["observer"] == "polling"
        assert status["roots"] == [{"root": str(live.root), "state": "polling"}]
        [hint] = [note for note in status["notes"] if "inotify" in note]
        assert "sudo sysctl fs.inotify.max_user_instances=" in hint
        (live.root / "new.jpg").write_bytes(jpeg(3))
        wait_for(lambda: str(live.root / "new.jpg") in live.paths(), "the polled file")


def test_a_store_that_goes_away_is_caught_up_with_once_it_is_back(tmp_path, random_clip):
    """The Chroma server stops while photos arrive: the run fails and says so, the watcher goes
    on, and once the server is back a retrying full pass makes everything searchable."""
    port, server_dir = free_port(), tmp_path / "server"
    with ExitStack() as server:
        server.enter_context(running_chroma(server_dir, port))
        store = {"store.mode": "http", "store.port": port}
        with watching(tmp_path, random_clip, **store) as live:
            (live.root / "before.jpg").write_bytes(jpeg(0))
            wait_for(lambda: live.library.store.count() == 1, "the first photo in Chroma")
            server.close()
            (live.root / "during.jpg").write_bytes(jpeg(1))
            failed = lambda: any("indexing failed" in note for note in live.status.notes)  # noqa: E731
            wait_for(failed, "the failed run's note")
            with running_chroma(server_dir, port):
                wait_for(lambda: live.library.store.count() == 2, "the photo added meanwhile", 60)
                assert live.status.running
                assert live.paths() == {
                    str(live.root / "before.jpg"),
                    str(live.root / "during.jpg"),
                }


def test_a_watcher_whose_collection_is_taken_over_stops_and_removes_nothing(tmp_path, random_clip):
    """Another catalog takes the Chroma collection over (`repair --take-over`) while a watcher
    runs: the watcher's next run stops it, before its repair could delete that catalog's records."""
    with running_chroma(tmp_path / "server") as port:
        store = {"store.mode": "http", "store.port": port}
        with watching(tmp_path, random_clip, **store) as live:
            (live.root / "mine.jpg").write_bytes(jpeg(0))
            wait_for(lambda: live.library.store.count() == 1, "the watcher's photo in Chroma")
            theirs = tmp_path / "theirs"
            theirs.mkdir()
            for number in (1, 2):
                (theirs / f"{number}.jpg").write_bytes(jpeg(number))
            config = http_config(tmp_path / "other.yaml", random_clip, tmp_path / "other", port)
            other = Cli(config)
            other.run("repair", "--take-over")
            assert other.index(theirs)["added"] == 2
            (live.root / "later.jpg").write_bytes(jpeg(3))
            wait_for(lambda: live.errors, "the watcher to stop")
            assert isinstance(live.errors.pop(), StoreOwnedError) and not live.status.running
            assert any("written from another catalog" in note for note in live.status.notes)
            hits = live.library.store.ids()
            assert {live.library.store.metadata(i)["path"] for i in hits} == {
                str(theirs / "1.jpg"),
                str(theirs / "2.jpg"),
            }
