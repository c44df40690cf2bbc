"""The search page's filter controls in a real headless Chromium, against a real uvicorn server."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_web_browser
from tests.test_query_filters import build_dated_gallery
from tests.test_web_api import serve_library
from tests.test_web_browser import names, sync_api
from tests.tinyclip import draw_shape

# the same Chromium and page fixtures as the other browser tests, on this module's `site`
browser, page = test_web_browser.browser, test_web_browser.page


@pytest.fixture(scope="module")
def site(tmp_path_factory, trained_clip) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("browser-filters")
    config, root = build_dated_gallery(base, trained_clip)
    with serve_library(config, base / "thumbs") as url:
        yield url, root


def dates(page) -> list[str]:
    return page.locator("#results .card .date").all_inner_texts()


def test_a_filter_changes_the_results_and_stays_in_the_url(page):
    page.goto("/?q=a+red+circle")
    sync_api.expect(page.locator("#results .card").first).to_be_visible()
    before = names(page)
    assert {Path(name).suffix for name in before} == {".jpg", ".png", ".webp"}
    page.get_by_text("Filters and order").click()
    page.get_by_label("Folder").fill("2023/summer")
    page.get_by_label("Order").select_option("date")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url("**/?q=a+red+circle&folder=2023%2Fsummer*sort=date*")
    after = names(page)
    assert after and after != before and all(name.endswith(".png") for name in after)
    shown = dates(page)
    assert len(shown) == len(after) and shown == sorted(shown, reverse=True)
    page.reload()
    sync_api.expect(page.get_by_label("Folder")).to_have_value("2023/summer")
    sync_api.expect(page.get_by_label("Order")).to_have_value("date")
    assert names(page) == after


def test_format_checkboxes_and_min_width(page):
    page.goto("/?q=a+blue+square")
    page.get_by_text("Filters and order").click()
    page.get_by_label("WEBP").check()
    page.get_by_label("JPEG").check()
    page.get_by_label("Min width").fill("100")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_url("**format=JPEG*")
    found = names(page)
    assert found and all(name.endswith(".jpg") for name in found)  # the webps are 96 px wide
    assert Path(found[0]).stem.startswith("blue_square")
    page.reload()
    sync_api.expect(page.get_by_label("JPEG")).to_be_checked()
    sync_api.expect(page.get_by_label("WEBP")).to_be_checked()
    sync_api.expect(page.get_by_label("PNG")).not_to_be_checked()


def test_upload_uses_the_words_and_the_filters_of_the_form(page, tmp_path):
    query = tmp_path / "query.png"
    draw_shape("yellow", "square", 160, random.Random(4)).save(query)
    page.goto("/")
    page.get_by_text("Filters and order").click()
    page.get_by_label("PNG").check()
    page.get_by_label("and add or subtract words").fill("+ a yellow square")
    page.set_input_files("#file", str(query))
    sync_api.expect(page.locator("#results-heading")).to_contain_text("query.png")
    sync_api.expect(page.locator("#results .card").first).to_be_visible()
    found = names(page)
    assert all(name.endswith(".png") for name in found)
    assert found[0].startswith("yellow_square")
