"""The pages in a real headless Chromium (Playwright), against a real uvicorn server."""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_web_api import BROKEN, build_library, label, png_bytes, serve_library
from tests.tinyclip import draw_shape

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"browser tests need Chromium at {CHROMIUM}", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests need playwright")

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory, trained_clip) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("browser")
    config, root = build_library(base, trained_clip)
    with serve_library(config, base / "thumbs") as url:
        yield url, root


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(base_url=site[0])
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def names(page) -> list[str]:
    return page.locator("#results .card .name").all_inner_texts()


def test_text_search_shows_red_circles_first(page):
    page.goto("/")
    page.get_by_label("Describe what you are looking for").fill("a red circle")
    page.keyboard.press("Enter")
    page.wait_for_url("**/?q=a+red+circle*")
    cards = page.locator("#results .card")
    sync_api.expect(cards.first).to_be_visible()
    assert [label(name) for name in names(page)[:3]] == ["red_circle"] * 3
    first = page.locator("#results .card img").first
    first.scroll_into_view_if_needed()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=first.element_handle()
    )


def test_upload_with_the_file_input(page, tmp_path):
    query = tmp_path / "query.png"
    draw_shape("green", "square", 160, random.Random(9)).save(query)
    page.goto("/")
    page.set_input_files("#file", str(query))
    sync_api.expect(page.locator("#results-heading")).to_contain_text("query.png")
    sync_api.expect(page.locator("#results .card").first).to_be_visible()
    assert sum(label(name) == "green_square" for name in names(page)[:3]) >= 2


def test_drop_an_image_on_the_drop_zone(page):
    page.goto("/")
    dropped = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [base64.b64encode(png_bytes("yellow", "circle")).decode(), "dropped.png"],
    )
    zone = page.locator("#dropzone")
    zone.dispatch_event("dragenter", {"dataTransfer": dropped})
    zone.dispatch_event("dragover", {"dataTransfer": dropped})
    sync_api.expect(zone).to_have_class(re.compile(r"\bover\b"))
    zone.dispatch_event("drop", {"dataTransfer": dropped})
    sync_api.expect(page.locator("#results-heading")).to_contain_text("dropped.png")
    sync_api.expect(page.locator("#results .card").first).to_be_visible()
    assert sum(label(name) == "yellow_circle" for name in names(page)[:3]) >= 2
    sync_api.expect(zone).not_to_have_class(re.compile(r"\bover\b"))


def test_similar_link_opens_a_results_page(page):
    page.goto("/?q=a+blue+triangle")
    page.locator("#results .card").first.get_by_role("link", name="similar").click()
    page.wait_for_url("**/similar/*")
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("similar to")
    found = names(page)
    assert found and sum(label(name) == "blue_triangle" for name in found[:2]) >= 1


def test_status_page_lists_the_broken_file(page, site):
    _, root = site
    page.goto("/status")
    row = page.locator("#failures tbody tr")
    sync_api.expect(row).to_have_count(1)
    sync_api.expect(row.locator("td").first).to_have_text(str(root / BROKEN))
    sync_api.expect(row.locator("td").nth(1)).to_contain_text("not an image")
