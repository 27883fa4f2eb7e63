"""A real browser (Debian chromium, driven by Playwright) does the main flow on the launched app.

It types a prompt, sees the ranked candidates, picks the top one with the keyboard shortcut "1",
sees the label counted, opens the plots tab, and saves screenshots (test artefacts, also used in
the README) to $LANGUAGE_RANKER_SCREENSHOTS (default tests/artifacts).
"""

import os
import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("LANGUAGE_RANKER_SCREENSHOTS", Path(__file__).resolve().parent / "artifacts"))


@pytest.fixture(scope="module")
def page(app_server):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"no chromium at {CHROMIUM}: scripts/setup.sh --test installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app_server[1])
        yield page
        browser.close()


def test_type_generate_pick_with_a_key_and_see_the_label_counted(page, app_server):
    from playwright.sync_api import expect

    service = app_server[2]
    SHOTS.mkdir(parents=True, exist_ok=True)
    before = service.labels.count()
    page.locator("#prompt textarea").fill("What is 23 + 19? Answer with just the number.")
    page.locator("button#generate").click()
    rows = page.locator("#candidates table tr")
    expect(rows).to_have_count(9, timeout=120_000)  # header + the default N=8
    expect(page.locator("#candidates")).to_contain_text("ranker's pick")
    expect(page.locator("#timing")).to_contain_text("8 candidates")
    page.locator("h1").click()  # leave the text box, so the key is a shortcut, not typing
    page.keyboard.press("1")
    expect(page.locator("#rank-label-status")).to_contain_text("Saved: candidate 1", timeout=30_000)
    expect(page.locator("#rank-count")).to_contain_text("1 labels from you")
    page.screenshot(path=str(SHOTS / "main-tab.png"), full_page=True)
    assert service.labels.count() == before + 1
    frame = service.labels.labels_frame()
    latest = frame.sort_values("created").iloc[-1]
    assert re.fullmatch("anon:[0-9a-f]{16}", latest.annotator) and not latest.blind  # the browser's own anonymous id
    expect(page.locator("#whoami")).to_contain_text(latest.annotator)
    page.reload()  # the anonymous id lives in the browser's local storage: a reload keeps it, and the count
    expect(page.locator("#whoami")).to_contain_text(f"You label as {latest.annotator}", timeout=30_000)
    expect(page.locator("#whoami")).to_contain_text("1 labels from you")


def test_a_full_ranking_and_grades_typed_with_the_keyboard_are_stored_as_candidate_indices(page, app_server):
    from playwright.sync_api import expect

    service = app_server[2]
    page.locator("#prompt textarea").fill("Name a colour.")
    page.locator("button#generate").click()
    expect(page.locator("#timing")).to_contain_text("RM", timeout=120_000)
    expect(page.locator("#candidates table tr")).to_have_count(9)
    box = page.locator("#rank-ranking input, #rank-ranking textarea").first
    box.fill("2 1 3 4 5 6 7 8")
    page.locator("#rank-grades input, #rank-grades textarea").first.fill("5 4 . . . . . 1")
    box.press("Enter")
    expect(page.locator("#rank-label-status")).to_contain_text("Saved: ranking and grades", timeout=30_000)
    latest = service.labels.labels_frame(include_undone=False).sort_values("created").iloc[-1]
    order, _ = service.shown(latest.request_id, latest.annotator)  # order[p]: the candidate shown at position p + 1
    assert latest.prompt == "Name a colour." and list(latest.order_shown) == order
    assert list(latest.ranking) == [order[1], order[0], *order[2:]] and latest.choice == str(order[1])
    assert latest.grades == {order[0]: 5, order[1]: 4, order[7]: 1} and latest.grade_scale == "stars"


def test_plots_tab_shows_the_figures(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Plots").click()
    plots = page.locator(".js-plotly-plot")
    expect(plots.first).to_be_visible(timeout=60_000)
    assert plots.count() >= 4
    expect(page.locator("body")).to_contain_text("Scaling law")
    page.screenshot(path=str(SHOTS / "plots-tab.png"), full_page=True)
