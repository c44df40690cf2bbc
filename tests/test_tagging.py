"""Tags at index time: label sets scored on new images, kept through moves, re-tagged from the
embedding cache when the sets change, and shown by status, the API and the detail page."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from pixseek.catalog import record_id
from pixseek.config import load_config
from pixseek.library import Library
from pixseek.web.app import create_app
from tests.conftest import Cli
from tests.labelsets import colour_of, colour_set, shapes_gallery, write_classify_config
from tests.test_web_api import serve
from tests.tinyclip import SHAPES

RED_ALERT = colour_set("alert", "red", flag=True)
BLUE = colour_set("blue", "blue", flag=False)


@pytest.fixture
def tagged(tmp_path, trained_clip) -> tuple[Cli, Path]:
    root = shapes_gallery(tmp_path / "gallery", per_class=2)
    config = write_classify_config(
        tmp_path / "config.yaml", trained_clip, tmp_path / "data", [RED_ALERT, BLUE]
    )
    cli = Cli(config)
    assert cli.index(root)["embedded"] == 24
    return cli, root


def chroma_metadata(cli: Cli) -> dict[str, dict]:
    """Every record's Chroma metadata, keyed by file name."""
    library = Library(load_config(cli.config).settings)
    try:
        found = library.store.collection.get(include=["metadatas"])
    finally:
        library.close()
    return {Path(meta["path"]).name: meta for meta in found["metadatas"]}


def expected_tags(name: str, sets: dict[str, str]) -> str:
    """The `tags` field a gallery file should get from sets {set name: colour}."""
    colour, shape = Path(name).stem.split("_")[:2]
    return ",".join(f"{s}:{colour} {shape}" for s, c in sorted(sets.items()) if c == colour)


def test_index_tags_new_images_and_flags_the_flag_sets_labels(tagged):
    cli, _ = tagged
    metadata = chroma_metadata(cli)
    assert len(metadata) == 24
    for name, meta in metadata.items():
        assert meta["flagged"] is (colour_of(name) == "red"), (name, meta)
        assert meta["tags"] == expected_tags(name, {"alert": "red", "blue": "blue"}), (name, meta)
    status = cli.json("status")
    assert status["tags"] == {
        **{f"alert:red {shape}": 2 for shape in SHAPES},
        **{f"blue:blue {shape}": 2 for shape in SHAPES},
    }
    assert "tag alert:red circle: 2" in cli.run("status")


def test_moved_and_copied_files_keep_their_tags(tagged):
    cli, root = tagged
    (root / "moved").mkdir()
    (root / "red_square_0.jpg").rename(root / "moved" / "red_square_0.jpg")
    (root / "copy_of_blue.jpg").write_bytes((root / "blue_circle_1.jpg").read_bytes())
    report = cli.index(root)
    assert (report["moved"], report["added"], report["embedded"]) == (1, 1, 0), report
    metadata = chroma_metadata(cli)
    assert metadata["red_square_0.jpg"]["path"] == str(root / "moved" / "red_square_0.jpg")
    assert metadata["red_square_0.jpg"]["flagged"] is True
    assert metadata["copy_of_blue.jpg"]["tags"] == "blue:blue circle"
    assert metadata["copy_of_blue.jpg"]["flagged"] is False


def test_changed_label_sets_retag_from_the_cache_without_embedding(tagged, trained_clip):
    cli, root = tagged
    cached = cli.json("status")["cached_embeddings"]
    base = cli.config.parent
    green_alert = colour_set("alert", "green", flag=True)
    write_classify_config(cli.config, trained_clip, base / "data", [green_alert])
    away = root.rename(base / "away")  # no image file can be read: only cached vectors remain
    report = cli.json("retag")
    assert report["scored"] == 24 and report["changed"] == 18, report  # red, green, blue
    away.rename(root)
    for name, meta in chroma_metadata(cli).items():
        assert meta["flagged"] is (colour_of(name) == "green"), (name, meta)
        assert meta["tags"] == expected_tags(name, {"alert": "green"}), (name, meta)
    assert "up to date" in cli.run("retag")

    yellow = colour_set("yellow", "yellow", flag=False)
    write_classify_config(cli.config, trained_clip, base / "data", [green_alert, yellow])
    report = cli.index(root)  # a run re-tags first when the sets changed
    assert (report["retagged"], report["embedded"], report["unchanged"]) == (6, 0, 24), report
    status = cli.json("status")
    assert status["cached_embeddings"] == cached
    assert status["tags"] == {
        **{f"alert:green {shape}": 2 for shape in SHAPES},
        **{f"yellow:yellow {shape}": 2 for shape in SHAPES},
    }


def test_label_set_config_errors_name_the_key(tmp_path, trained_clip):
    broken = dict(RED_ALERT, neutral=["red circle", "blue circle"])
    config = write_classify_config(tmp_path / "c.yaml", trained_clip, tmp_path / "d", [broken])
    output = Cli(config).run("status", expect=2)
    assert "classify.label_sets" in output and "repeated: ['red circle']" in output
    twice = write_classify_config(
        tmp_path / "c.yaml", trained_clip, tmp_path / "d", [RED_ALERT, RED_ALERT]
    )
    assert "label set names must be unique" in Cli(twice).run("status", expect=2)


def test_tags_on_the_api_detail_page_and_status_page(tagged):
    cli, root = tagged
    library = Library(load_config(cli.config).settings)
    red, green = (record_id(str(root), f"{c}_triangle_1.jpg") for c in ("red", "green"))
    try:
        with serve(create_app(library)) as url:
            info = httpx.get(f"{url}/api/images/{red}").json()
            assert info["flagged"] is True
            assert [(t["label_set"], t["label"], t["flag"]) for t in info["tags"]] == [
                ("alert", "red triangle", True)
            ]
            assert info["tags"][0]["score"] >= 0.5
            plain = httpx.get(f"{url}/api/images/{green}").json()
            assert (plain["flagged"], plain["tags"]) == (False, [])
            page = httpx.get(f"{url}/images/{red}").text
            assert "alert: red triangle (flagged)" in page
            assert "Tags" not in httpx.get(f"{url}/images/{green}").text
            assert httpx.get(f"{url}/api/status").json()["tags"]["blue:blue square"] == 2
            assert "alert:red circle" in httpx.get(f"{url}/status").text
    finally:
        library.close()


def test_lean_records_hold_path_and_tags_and_filters_still_work(tmp_path, trained_clip):
    root = shapes_gallery(tmp_path / "gallery", per_class=1)
    config = write_classify_config(
        tmp_path / "c.yaml", trained_clip, tmp_path / "data", [RED_ALERT]
    )
    settings = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**settings, "store": {"metadata": "lean"}}))
    cli = Cli(config)
    assert cli.index(root)["embedded"] == 12
    metadata = chroma_metadata(cli)
    assert len(metadata) == 12
    for name, meta in metadata.items():
        assert set(meta) == {"path", "flagged", "tags"}, (name, meta)
        assert meta["flagged"] is (colour_of(name) == "red"), (name, meta)
    flagged = cli.json("search", "a red square", "--flagged", "only", "-k", "20")
    assert sorted(Path(hit["path"]).name for hit in flagged) == sorted(
        name for name in metadata if colour_of(name) == "red"
    )
    wide = cli.json("search", "a square", "--min-width", "129", "--flagged", "any")
    assert wide == []  # the gallery's images are 128 wide: the catalog answers the filter
