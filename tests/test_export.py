"""`pixseek export`: Parquet and .npz files read back and compared with the catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pixseek.config import load_config
from pixseek.library import Library
from pixseek.search.export import COLUMNS, export
from pixseek.tags import TagTable, tag_metadata
from tests.conftest import Cli
from tests.labelsets import colour_set, write_classify_config


@pytest.fixture
def exported(tmp_path, random_clip, gallery) -> tuple[Cli, Library]:
    """The 12-image gallery indexed with a random model and a label set loose enough to tag."""
    loose = dict(colour_set("loose", "red", flag=True), threshold=0.05)
    cli = Cli(write_classify_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", [loose]))
    cli.index(gallery)
    library = Library(load_config(cli.config).settings)
    yield cli, library
    library.close()


def catalog_columns(library: Library) -> tuple[dict[str, list], np.ndarray]:
    """What the catalog holds, in id order, in the export's column names."""
    rows = sorted(library.catalog.indexed(library.model_key), key=lambda row: row.id)
    found = TagTable(library.catalog).for_hashes(library.model_key, [r.content_hash for r in rows])
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for row in rows:
        tags = tag_metadata(found.get(row.content_hash, []))
        for name in COLUMNS:
            value = tags.get(name, getattr(row, "content_hash" if name == "hash" else name, None))
            columns[name].append(value)
    vectors = library.catalog.vectors(library.model_key, [row.content_hash for row in rows])
    return columns, vectors


def test_parquet_holds_every_record_with_metadata_tags_and_embeddings(exported, tmp_path):
    cli, library = exported
    report = cli.json("export", str(tmp_path / "out.parquet"))
    assert (report["records"], report["dim"], report["format"]) == (12, 32, "parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    expected, vectors = catalog_columns(library)
    for name in COLUMNS:
        assert table.column(name).to_pylist() == expected[name], name
    assert any(expected["tags"]) and any(expected["flagged"])  # the comparison covers tags
    embeddings = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.array_equal(embeddings, vectors)
    assert table.schema.metadata[b"pixseek.model"] == library.model_key.encode()


def test_npz_holds_the_same_and_loads_without_pickle(exported, tmp_path):
    cli, library = exported
    cli.run("export", "--format", "npz", str(tmp_path / "dataset.bin"))
    data = np.load(tmp_path / "dataset.bin", allow_pickle=False)
    expected, vectors = catalog_columns(library)
    missing = {"camera": "", "taken_at": np.nan}  # the gallery's JPEGs carry no EXIF
    for name in COLUMNS:
        want = [missing.get(name) if value is None else value for value in expected[name]]
        np.testing.assert_array_equal(data[name], np.array(want), err_msg=name)
    assert data["embeddings"].dtype == np.float32
    assert np.array_equal(data["embeddings"], vectors)
    assert str(data["model"]) == library.model_key


@pytest.mark.parametrize("suffix", ["parquet", "npz"])
def test_small_batches_write_the_same_file(exported, tmp_path, suffix):
    _, library = exported
    whole = export(library.catalog, library.model_key, tmp_path / f"a.{suffix}", suffix)
    pieces = export(library.catalog, library.model_key, tmp_path / f"b.{suffix}", suffix, 5)
    assert whole.records == pieces.records == 12
    if suffix == "npz":
        a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    else:
        assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


def test_bad_format_or_target_is_refused_and_an_earlier_export_survives(exported, tmp_path):
    cli, _ = exported
    assert "unknown export format 'csv'" in cli.run("export", str(tmp_path / "x.csv"), expect=2)
    assert "parquet, npz" in cli.run("export", "-f", "xlsx", str(tmp_path / "x.npz"), expect=2)
    assert "does not exist" in cli.run("export", str(tmp_path / "no" / "x.npz"), expect=2)
    assert "is a folder" in cli.run("export", "-f", "npz", str(tmp_path), expect=2)
    target = tmp_path / "keep.npz"
    target.write_bytes(b"an earlier export")
    cli.run("export", "-f", "csv", str(target), expect=2)
    assert target.read_bytes() == b"an earlier export"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_an_empty_library_exports_an_empty_file(tmp_path, random_clip):
    cli = Cli(write_classify_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", []))
    assert cli.json("export", str(tmp_path / "empty.parquet"))["records"] == 0
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    cli.run("export", str(tmp_path / "empty.npz"))
    assert np.load(tmp_path / "empty.npz")["id"].shape == (0,)


def test_written_paths_are_absolute(exported, tmp_path, monkeypatch):
    cli, _ = exported
    monkeypatch.chdir(tmp_path)
    report = cli.json("export", "rel.npz")
    assert Path(report["path"]) == tmp_path / "rel.npz" and Path(report["path"]).is_file()
