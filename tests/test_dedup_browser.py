"""The duplicates page in a real headless Chromium: keeper marked, keep, dismiss, keys, bulk."""

from __future__ import annotations

import pytest

from tests.test_dedup_web import site  # noqa: F401  (a fixture)
from tests.test_web_browser import ARGS, CHROMIUM, sync_api


@pytest.fixture
def page(site):  # noqa: F811
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        context = browser.new_context(base_url=site[0])
        context.set_default_timeout(15_000)
        yield context.new_page()
        browser.close()


def test_duplicates_page_marks_the_keeper_and_keeps_a_group(page):
    page.goto("/")
    page.get_by_role("link", name="Duplicates").click()
    page.wait_for_url("**/duplicates")
    groups = page.locator(".dup-group")
    sync_api.expect(groups).to_have_count(1)
    keeper = groups.first.locator(".card.keeper")
    sync_api.expect(keeper).to_have_count(1)
    sync_api.expect(keeper.locator(".badge.keep")).to_have_text("suggested keeper")
    sync_api.expect(keeper.locator(".name")).to_contain_text("scene0.png")
    image = keeper.locator("img")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    groups.first.get_by_role("button", name="Keep all").click()
    sync_api.expect(page.locator("#message")).to_have_text("1 group(s) kept as they are")
    sync_api.expect(page.locator(".dup-group")).to_have_count(0)


def test_keyboard_dismisses_and_quarantines_groups(page, site):  # noqa: F811
    quarantine = site[2]
    page.goto("/duplicates?tier=near")
    sync_api.expect(page.locator(".dup-group")).to_have_count(2)
    page.keyboard.press("j")
    first = page.locator(".dup-group").first
    sync_api.expect(first).to_be_focused()
    page.keyboard.press("d")
    sync_api.expect(page.locator("#message")).to_have_text("1 group(s) marked not duplicates")
    sync_api.expect(page.locator(".dup-group")).to_have_count(1)
    page.keyboard.press("j")
    page.keyboard.press("q")
    sync_api.expect(page.locator("#message")).to_contain_text("moved 1 file(s) to quarantine")
    sync_api.expect(page.locator(".dup-group")).to_have_count(0)
    assert len(list(quarantine.rglob("*.jpg"))) == 1
    page.locator("#manifests").get_by_role("button", name="Undo").click()
    sync_api.expect(page.locator("#message")).to_have_text("restored 1 file(s)")
    assert not list(quarantine.rglob("*.jpg"))


def test_bulk_selection_applies_to_every_selected_group(page):
    page.goto("/duplicates?tier=near")
    sync_api.expect(page.locator(".dup-group")).to_have_count(2)
    page.get_by_role("button", name="Select all on this page").click()
    page.get_by_role("button", name="Selected are not duplicates").click()
    sync_api.expect(page.locator("#message")).to_have_text("2 group(s) marked not duplicates")
    sync_api.expect(page.locator("#summary")).to_contain_text("0 groups")
