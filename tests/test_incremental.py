"""Incremental indexing through the CLI: only what changed is embedded; moves keep embeddings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from PIL import Image

from tests.tinyclip import draw_shape


def _paths(cli, text: str = "a red circle", k: int = 50) -> set[str]:
    return {hit["path"] for hit in cli.json("search", text, "-k", str(k))}


def test_first_run_indexes_everything_and_rerun_nothing(cli, gallery):
    first = cli.index(gallery)
    assert (first["added"], first["embedded"], first["failed"]) == (12, 12, 0)
    again = cli.index(gallery)
    assert (again["added"], again["updated"], again["embedded"]) == (0, 0, 0)
    assert again["unchanged"] == 12
    status = cli.json("status")
    assert status["indexed"] == 12 and status["store"]["records"] == 12


def test_a_run_says_where_its_time_went_and_a_rerun_loads_no_model(cli, gallery):
    first = cli.index(gallery)
    assert {"scan", "plan", "model", "embed", "publish"} <= first["phases"].keys()
    assert sum(first["phases"].values()) <= first["elapsed"] + 0.01
    assert first["steps"]["load_model"] > 0
    again = cli.index(gallery)
    assert again["unchanged"] == 12
    assert not {"model", "embed"} & again["phases"].keys(), again["phases"]
    assert again["steps"] == {}


def test_touch_without_change_embeds_nothing(cli, gallery):
    cli.index(gallery)
    target = gallery / "red-square.jpg"
    os.utime(target, ns=(1, 1_000_000_000))
    report = cli.index(gallery)
    assert (report["embedded"], report["updated"], report["unchanged"]) == (0, 0, 12)


def test_edit_reembeds_exactly_one(cli, gallery):
    cli.index(gallery)
    draw_shape("blue", "triangle", 96).save(gallery / "red-square.jpg", quality=90)
    report = cli.index(gallery)
    assert (report["updated"], report["embedded"], report["added"]) == (1, 1, 0)


def test_moving_a_file_and_a_folder_keeps_embeddings(cli, gallery):
    cli.index(gallery)
    (gallery / "renamed").mkdir()
    shutil.move(gallery / "red-square.jpg", gallery / "renamed" / "square of red.jpg")
    shutil.move(gallery / "sub", gallery / "elsewhere")
    report = cli.index(gallery)
    assert report["moved"] == 5 and report["embedded"] == 0 and report["deleted"] == 0
    paths = _paths(cli)
    assert str(gallery / "renamed" / "square of red.jpg") in paths
    assert not any("/sub/" in path for path in paths)
    assert sum("/elsewhere/" in path for path in paths) == 4
    assert cli.json("status")["store"]["records"] == 12


def test_deleted_file_is_gone_from_search(cli, gallery):
    cli.index(gallery)
    (gallery / "green-square.jpg").unlink()
    report = cli.index(gallery)
    assert report["deleted"] == 1
    assert str(gallery / "green-square.jpg") not in _paths(cli)
    assert len(_paths(cli)) == 11


def test_copy_of_an_indexed_image_reuses_its_embedding(cli, gallery):
    cli.index(gallery)
    shutil.copy(gallery / "red-square.jpg", gallery / "copy.jpg")
    report = cli.index(gallery)
    assert (report["added"], report["embedded"]) == (1, 0)


def test_delete_guard_refuses_an_emptied_root(cli, gallery):
    cli.index(gallery)
    for path in list(gallery.rglob("*.jpg")):
        path.unlink()
    report = cli.index(gallery)
    assert report["deleted"] == 0
    assert any("root is empty" in note for note in report["notes"])
    assert len(_paths(cli)) == 12


def test_delete_guard_refuses_a_missing_root(cli, gallery, tmp_path):
    cli.index(gallery)
    shutil.move(gallery, tmp_path / "unmounted")
    report = cli.index(gallery)
    assert report["deleted"] == 0 and any("missing" in note for note in report["notes"])
    assert len(_paths(cli)) == 12


def test_delete_guard_refuses_mass_deletion_unless_allowed(cli, gallery):
    cli.index(gallery)
    for path in sorted(gallery.glob("*.jpg"))[:7]:
        path.unlink()
    refused = cli.index(gallery)
    assert refused["deleted"] == 0 and any("more than" in n for n in refused["notes"])
    allowed = cli.index(gallery, allow_deletes=True)
    assert allowed["deleted"] == 7
    assert len(_paths(cli)) == 5


def test_hidden_and_excluded_files_are_skipped(tmp_path, random_clip):
    from tests.conftest import Cli, write_config

    root = tmp_path / "pics"
    (root / ".cache").mkdir(parents=True)
    (root / "raw").mkdir()
    for name in ("keep.jpg", ".hidden.jpg", ".cache/thumb.jpg", "raw/big.jpg", "notes.txt"):
        draw_shape("red", "circle", 64).save(root / name, format="JPEG")
    config = write_config(tmp_path / "c.yaml", random_clip, tmp_path / "data", exclude=["raw/*"])
    report = Cli(config).index(root)
    assert report["added"] == 1


def test_png_named_jpg_is_indexed_by_content(cli, tmp_path):
    root = tmp_path / "pics"
    root.mkdir()
    draw_shape("green", "square", 64).save(root / "really-a-png.jpg", format="PNG")
    assert cli.index(root)["added"] == 1
    assert Image.open(root / "really-a-png.jpg").format == "PNG"


def test_second_root_and_search_json_shape(cli, gallery, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    draw_shape("yellow", "circle", 64).save(other / "y.jpg")
    cli.index(gallery, other)
    hits = cli.json("search", "a yellow circle", "-k", "13")
    assert len(hits) == 13
    assert all(set(hit) == {"id", "path", "score", "date"} for hit in hits)
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    page = cli.json("search", "a yellow circle", "-k", "5", "--offset", "5")
    assert [hit["id"] for hit in page] == [hit["id"] for hit in hits[5:10]]
    assert Path(hits[0]["path"]).exists()
