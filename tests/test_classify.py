"""Zero-shot classification from the CLI and the JSON API, with the tiny CLIP trained on shapes."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import httpx
import pytest

from pixseek.catalog import record_id
from pixseek.config import load_config
from pixseek.library import Library
from pixseek.web.app import create_app
from tests.conftest import Cli
from tests.labelsets import shapes_gallery, write_classify_config
from tests.test_web_api import serve
from tests.tinyclip import draw_shape

LABELS = "red circle, blue square, green triangle, yellow circle"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory, trained_clip) -> tuple[Cli, Path]:
    base = tmp_path_factory.mktemp("classify")
    root = shapes_gallery(base / "gallery", per_class=2)
    cli = Cli(write_classify_config(base / "config.yaml", trained_clip, base / "data", []))
    assert cli.index(root)["added"] == 24
    return cli, root


def _best(results: list[dict]) -> list[tuple[str, str, float]]:
    return [(Path(r["path"]).name, r["best"], r["probabilities"][r["best"]]) for r in results]


def test_the_right_label_wins_for_indexed_and_new_images(shapes, tmp_path):
    cli, root = shapes
    outside = tmp_path / "outside.png"
    draw_shape("yellow", "circle", 150, random.Random(9)).save(outside)
    targets = [root / "red_circle_0.jpg", root / "blue_square_1.jpg", root / "green_triangle_0.jpg"]
    results = cli.json("classify", "--labels", LABELS, *map(str, [*targets, outside]))
    assert [r["best"] for r in results] == [
        "red circle",
        "blue square",
        "green triangle",
        "yellow circle",
    ], _best(results)
    for result in results:
        assert list(result["probabilities"]) == [label.strip() for label in LABELS.split(",")]
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert result["probabilities"][result["best"]] >= 0.9, _best(results)
    assert results[3]["id"] is None and results[0]["id"] == record_id(str(root), targets[0].name)


def test_classify_by_record_id_and_by_text_query(shapes):
    cli, root = shapes
    record = record_id(str(root), "blue_square_0.jpg")
    by_id = cli.json("classify", "--labels", LABELS, "--id", record)
    by_path = cli.json("classify", "--labels", LABELS, str(root / "blue_square_0.jpg"))
    assert by_id[0]["probabilities"] == by_path[0]["probabilities"]
    assert by_id[0]["best"] == "blue square"
    found = cli.json("classify", "--labels", "red circle, green square", "--query", "a red circle")
    assert len(found) == 10  # -k defaults to 10
    assert sum(item["best"] == "red circle" for item in found[:2]) == 2, _best(found)
    text = cli.run("classify", "--labels", LABELS, "--id", record)
    assert "blue_square_0.jpg" in text and "blue square" in text and "%" in text


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("red circle,,blue square", "label 2 is empty"),
        ("red circle, Red Circle", "given twice"),
        ("red circle", "at least two labels"),
        (",".join(f"label {n}" for n in range(101)), "at most 100 labels"),
    ],
)
def test_bad_labels_get_a_clear_error(shapes, labels, message):
    cli, root = shapes
    assert message in cli.run(
        "classify", "--labels", labels, str(root / "red_circle_0.jpg"), expect=2
    )


def test_bad_targets_get_a_clear_error(shapes):
    cli, root = shapes
    assert "one of them" in cli.run(
        "classify", "--labels", LABELS, "--query", "a red circle", "--id", "x", expect=2
    )
    assert "one of them" in cli.run("classify", "--labels", LABELS, expect=2)
    assert "no indexed image" in cli.run("classify", "--labels", LABELS, "--id", "nope", expect=2)
    assert "neither an indexed record id nor an image file" in cli.run(
        "classify", "--labels", LABELS, str(root / "missing.jpg"), expect=2
    )


def _png(colour: str, shape: str) -> bytes:
    buffer = io.BytesIO()
    draw_shape(colour, shape, 160, random.Random(4)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_classify_api_by_ids_and_by_upload(shapes):
    cli, root = shapes
    library = Library(load_config(cli.config).settings)
    ids = [record_id(str(root), name) for name in ("red_circle_1.jpg", "green_triangle_1.jpg")]
    labels = [label.strip() for label in LABELS.split(",")]
    try:
        with serve(create_app(library, max_upload_bytes=300_000)) as url:
            answer = httpx.post(f"{url}/api/classify", json={"labels": labels, "ids": ids})
            assert answer.status_code == 200, answer.text
            results = answer.json()["results"]
            assert [r["best"] for r in results] == ["red circle", "green triangle"]
            assert results[0]["path"] == str(root / "red_circle_1.jpg")

            upload = httpx.post(
                f"{url}/api/classify/image",
                files={"file": ("shape.png", _png("blue", "square"), "image/png")},
                data={"labels": LABELS},
            )
            assert upload.status_code == 200, upload.text
            assert upload.json()["results"][0]["best"] == "blue square"

            for body, status, message in [
                ({"labels": ["a", " A "], "ids": ids}, 400, "given twice"),
                ({"labels": ["red circle", " "], "ids": ids}, 400, "label 2 is empty"),
                ({"labels": labels, "ids": ["no-such-id"]}, 400, "no indexed image"),
                ({"labels": ["only one"], "ids": ids}, 422, "labels"),
                ({"labels": labels, "ids": []}, 422, "ids"),
            ]:
                bad = httpx.post(f"{url}/api/classify", json=body)
                assert bad.status_code == status and message in bad.text, (body, bad.text)
            not_image = httpx.post(
                f"{url}/api/classify/image",
                files={"file": ("notes.png", b"plain text, not a picture", "image/png")},
                data={"labels": LABELS},
            )
            assert not_image.status_code == 400, not_image.text

            page = httpx.get(f"{url}/images/{ids[0]}", params={"labels": "blue square, red circle"})
            rows = re.findall(r"<tr><td>([^<]+)</td><td>([\d.]+)%</td></tr>", page.text)
            assert rows[0][0] == "red circle" and float(rows[0][1]) >= 90, rows
            assert [label for label, _ in rows] == ["red circle", "blue square"]
            bad = httpx.get(f"{url}/images/{ids[0]}", params={"labels": "red circle,,"})
            assert bad.status_code == 200 and "label 2 is empty" in bad.text
    finally:
        library.close()
