"""Crash safety: kill -9 mid-run loses no embedding work; Chroma is repaired from the catalog."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import chromadb
import psutil

from pixseek.catalog import record_id
from pixseek.embedder import collection_name
from tests.conftest import Cli, write_config
from tests.tinyclip import classes, draw_shape

FILES = 600


def _cached_embeddings(catalog: Path) -> int:
    try:
        with sqlite3.connect(catalog, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _chroma(path: Path) -> chromadb.ClientAPI:
    return chromadb.PersistentClient(str(path), chromadb.Settings(anonymized_telemetry=False))


def _make_gallery(root: Path, count: int) -> None:
    root.mkdir()
    rng = random.Random(11)
    pairs = classes()
    for number in range(count):
        colour, shape = pairs[number % len(pairs)]
        draw_shape(colour, shape, 160, rng).save(root / f"{number:04d}.jpg", quality=85)


def test_kill_during_indexing_then_resume(tmp_path, random_clip):
    root = tmp_path / "pics"
    _make_gallery(root, FILES)
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data")
    (tmp_path / "c.yaml").write_text(
        (tmp_path / "c.yaml").read_text().replace("batch_size: 16", "batch_size: 4")
    )
    catalog = tmp_path / "data" / "catalog.sqlite3"
    env = os.environ | {"PIXSEEK_CONFIG": str(config)}
    command = [sys.executable, "-m", "pixseek.cli", "index", str(root), "--json"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _cached_embeddings(catalog) < 40 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    helpers = psutil.Process(process.pid).children(recursive=True)
    assert helpers, "decode workers should be running"
    process.send_signal(signal.SIGKILL)
    process.wait()
    _gone, alive = psutil.wait_procs(helpers, timeout=10)
    assert not alive, f"decode processes outlived the killed indexer: {alive}"
    before = _cached_embeddings(catalog)
    assert 0 < before < FILES, before

    report = Cli(config).index(root)
    assert report["embedded"] == FILES - before  # nothing embedded twice
    assert report["added"] + report["unchanged"] == FILES

    with sqlite3.connect(catalog) as db:
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT path) FROM files").fetchone()
    assert rows == (FILES, FILES)
    client = _chroma(tmp_path / "data" / "chroma")
    ids = client.get_collection(collection_name(str(random_clip))).get(include=[])["ids"]
    expected = {record_id(str(root), f"{n:04d}.jpg") for n in range(FILES)}
    assert len(ids) == FILES and set(ids) == expected


def test_repair_restores_lost_chroma_records_without_embedding(cli, gallery, random_clip):
    cli.index(gallery)
    client = _chroma(Path(cli.config).parent / "data" / "chroma")
    collection = client.get_collection(collection_name(str(random_clip)))
    lost = collection.get(include=[], limit=5)["ids"]
    collection.delete(ids=lost)
    collection.upsert(ids=["stray"], embeddings=[[1.0] + [0.0] * 31], metadatas=[{"path": "/x"}])
    assert cli.json("repair") == {"restored": 5, "removed": 1, "expected": 12}
    assert collection.count() == 12
    assert cli.json("repair") == {"restored": 0, "removed": 0, "expected": 12}
    hits = cli.json("search", "a red circle", "-k", "12")
    assert {hit["id"] for hit in hits} >= set(lost)
