"""Live watching with the real watchdog observer: copies, slow writes, moves, deletes, unmounts."""

from __future__ import annotations

import io
import random
import shutil
import threading
import time
from collections.abc import Callable

import pytest

from pixseek.config import load_config
from pixseek.indexer.pipeline import IndexReport
from pixseek.indexer.watch import watch
from pixseek.library import Library
from tests.conftest import write_config
from tests.tinyclip import classes, draw_shape


@pytest.fixture
def watching(tmp_path, random_clip):
    root = tmp_path / "live"
    root.mkdir()
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    settings = load_config(config, {"watch.settle_s": 0.5}).settings
    library = Library(settings, writer=True)
    reports: list[IndexReport] = []
    stop = threading.Event()
    thread = threading.Thread(target=watch, args=(library, [str(root)], stop, reports.append))
    thread.start()
    _wait_for(lambda: reports, "the startup reconcile")
    yield root, library, reports
    stop.set()
    thread.join(timeout=30)
    library.close()


def _wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _paths(library: Library) -> set[str]:
    return {row.path for row in library.catalog.indexed(library.model_key)}


def _jpeg(number: int) -> bytes:
    colour, shape = classes()[number % 12]
    buffer = io.BytesIO()
    draw_shape(colour, shape, 96, random.Random(number)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_copies_moves_deletes_and_slow_writes(watching):
    root, library, reports = watching
    incoming = root / "incoming"
    incoming.mkdir()
    for number in range(200):
        (incoming / f"{number:02d}.jpg").write_bytes(_jpeg(number))
    _wait_for(lambda: len(_paths(library)) == 200, "200 copied files to be indexed")
    _wait_for(lambda: sum(r.embedded for r in reports) == 200, "the burst's report")
    assert library.store.count() == 200
    embedded_before = 200
    shutil.move(incoming, root / "sorted")
    _wait_for(lambda: all("/sorted/" in path for path in _paths(library)), "the folder move")
    assert sum(report.embedded for report in reports) == embedded_before
    assert len(_paths(library)) == 200

    slow = root / "slow.jpg"
    data = _jpeg(99)
    with open(slow, "wb") as handle:
        for start in range(0, len(data), 400):
            handle.write(data[start : start + 400])
            handle.flush()
            time.sleep(0.05)
    _wait_for(lambda: str(slow) in _paths(library), "the slowly written file")
    assert library.catalog.failures() == []
    assert sum(report.failed for report in reports) == 0

    (root / "sorted" / "00.jpg").unlink()
    _wait_for(lambda: len(_paths(library)) == 200, "the delete")
    assert str(root / "sorted" / "00.jpg") not in _paths(library)


def test_removed_root_deletes_nothing(watching, tmp_path):
    root, library, reports = watching
    for number in range(6):
        (root / f"{number}.jpg").write_bytes(_jpeg(number))
    _wait_for(lambda: len(_paths(library)) == 6, "6 files to be indexed")
    shutil.move(root, tmp_path / "unplugged")
    _wait_for(lambda: any("missing" in note for r in reports for note in r.notes), "the guard")
    assert len(_paths(library)) == 6 and library.store.count() == 6
