"""Combined queries, filters, cutoff and date order through the JSON API and the search page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pixseek.catalog import record_id
from tests.test_query_filters import FLAGGED_COLOUR, build_dated_gallery, flag_colour, label
from tests.test_web_api import png_bytes, serve_library


@pytest.fixture(scope="module")
def gallery_config(tmp_path_factory, trained_clip) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("web-query")
    config, root = build_dated_gallery(base, trained_clip)
    flag_colour(config, FLAGGED_COLOUR)
    return config, root


@contextmanager
def client_for(config: Path, **flags: object) -> Iterator[httpx.Client]:
    with (
        serve_library(config, config.parent / "thumbs", **flags) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def api(gallery_config) -> Iterator[tuple[httpx.Client, Path]]:
    config, root = gallery_config
    with client_for(config) as client:
        yield client, root


def results(client: httpx.Client, **params: object) -> list[dict]:
    response = client.get("/api/search", params={"q": "a red circle", "k": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def suffixes(hits: list[dict]) -> set[str]:
    return {Path(hit["name"]).suffix for hit in hits}


def test_filters_as_query_parameters(api):
    client, root = api
    assert len(results(client)) == 36
    assert suffixes(results(client, folder="2023/summer")) == {".png"}
    assert len(results(client, folder=str(root / "2023"))) == 24
    in_2019 = results(client, since="2019-01", until="2019-12")
    assert len(in_2019) == 12 and suffixes(in_2019) == {".jpg"}
    assert suffixes(results(client, format=["png", "webp"])) == {".png", ".webp"}
    assert suffixes(results(client, format="jpeg,webp", min_height=100)) == {".jpg"}
    assert suffixes(results(client, min_width=200)) == {".png"}
    only = results(client, flagged="only")
    assert len(only) == 9 and all(hit["name"].startswith(FLAGGED_COLOUR) for hit in only)
    assert len(results(client, flagged="hide", folder="2019")) == 9


def test_safe_search_hides_flagged_images_unless_asked(gallery_config):
    config, root = gallery_config
    moderation = [{"name": "moderation", "labels": ["nudity"], "flag": True}]
    with client_for(config, **{"classify.label_sets": moderation}) as client:
        shown = results(client)
        assert len(shown) == 27 and not any(h["name"].startswith(FLAGGED_COLOUR) for h in shown)
        assert len(results(client, flagged="any")) == 36
        target = record_id(str(root), "2019/yellow_circle_0.jpg")
        similar = client.get(f"/api/images/{target}/similar", params={"k": 50}).json()
        assert not any(h["name"].startswith(FLAGGED_COLOUR) for h in similar["results"])
        page = client.get(f"/similar/{target}", params={"k": 50}).text
        assert "yellow_" not in page.split("<section", 1)[1]


def test_blank_form_values_mean_no_filter(api):
    client, _ = api
    blank = {"folder": "", "since": "", "until": "", "min_width": "", "min_height": "",
             "min_score": "", "flagged": "", "format": ""}  # fmt: skip
    assert [hit["id"] for hit in results(client, **blank)] == [hit["id"] for hit in results(client)]


def test_combined_query_with_ids_and_indexed_paths(api):
    client, root = api
    square = record_id(str(root), "2019/red_square_0.jpg")
    by_id = results(client, q=f"id:{square} + 2:a red circle", k=6)
    assert square not in {hit["id"] for hit in by_id}
    assert sum(label(hit["name"]) == "red_circle" for hit in by_id[:3]) == 3
    by_path = results(client, q=f"{root / '2019' / 'red_square_0.jpg'} + 2:a red circle", k=6)
    assert [hit["id"] for hit in by_path] == [hit["id"] for hit in by_id]


def test_min_score_and_date_order(api):
    client, _ = api
    ranked = results(client)
    cutoff = ranked[11]["score"] - 1e-6
    by_date = results(client, min_score=cutoff, sort="date")
    assert len(by_date) >= 12 and all(hit["score"] >= cutoff for hit in by_date)
    dates = [hit["date"] for hit in by_date]
    assert dates == sorted(dates, reverse=True)


def test_upload_combines_with_words_and_filters(api):
    client, _ = api
    files = {"file": ("query.png", png_bytes("red", "square"), "image/png")}
    alone = client.post("/api/search/image", params={"k": 3}, files=files).json()["results"]
    assert [label(hit["name"]) for hit in alone] == ["red_square"] * 3
    files = {"file": ("query.png", png_bytes("red", "square"), "image/png")}
    params = {"k": 3, "q": "- a red square + 2:a blue square", "format": "webp"}
    mixed = client.post("/api/search/image", params=params, files=files).json()["results"]
    assert label(mixed[0]["name"]) == "blue_square"
    assert suffixes(mixed) == {".webp"}


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"since": "yesterday"}, 400, "since: 'yesterday' is not a date"),
        ({"until": "2023-02-30"}, 400, "until: '2023-02-30' is not a date"),
        ({"since": "2024", "until": "2023"}, 400, "must be before until"),
        ({"format": "psd"}, 400, "unknown format 'PSD'"),
        ({"sort": "name"}, 422, "score"),
        ({"flagged": "maybe"}, 422, "any"),
        ({"min_width": "-3"}, 422, "greater than or equal to 1"),
        ({"min_height": "tall"}, 422, "valid integer"),
        ({"min_score": "2"}, 422, "less than or equal to 1"),
        ({"q": '"a red circle + x'}, 400, "column 1: this quote is never closed"),
        ({"q": "- a red circle"}, 400, "needs a term to add"),
        ({"q": "a cat + id:nope"}, 400, "term 2 at column 9"),
        ({"q": "a cat + /etc/hostname.png"}, 400, "not an indexed image"),
    ],
)
def test_bad_parameters_get_a_4xx_with_a_message(api, params, status, detail):
    client, _ = api
    response = client.get("/api/search", params={"q": "a red circle", **params})
    assert response.status_code == status, response.text
    assert detail in str(response.json()["detail"])


def test_search_page_keeps_the_filters_in_its_form_and_links(api):
    client, _ = api
    params = {"q": "a red circle", "folder": "2023", "format": "PNG", "sort": "date", "k": 4}
    page = client.get("/", params=params)
    assert page.status_code == 200
    html = page.text
    assert 'name="folder" value="2023"' in html
    assert re.search(r'value="PNG"\s+checked', html)
    assert re.search(r'<option value="date" selected>', html)
    assert 'name="k" value="4"' in html
    next_link = re.search(r'rel="next" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "folder=2023" in next_link and "format=PNG" in next_link and "offset=4" in next_link
    assert 'action="/search/image?folder=2023' in html  # the upload form keeps them too
    assert html.count('class="card"') == 4 and ".webp" not in html and ".jpg" not in html
    bad = client.get("/", params={"q": "a red circle", "since": "soon"})
    assert bad.status_code == 400 and "is not a date" in bad.text


def test_upload_form_without_javascript_applies_filters(api):
    client, _ = api
    files = {"file": ("query.png", png_bytes("green", "circle"), "image/png")}
    page = client.post("/search/image?format=webp", files=files, data={"q": "+ a green circle"})
    assert page.status_code == 200
    found = re.findall(r'title="[^"]*/([^"/]+)"', page.text)
    assert found and all(name.endswith(".webp") for name in found)
    assert found[0].startswith("green_circle")
