"""The Screen tab against the real server: the store's saved screen as a filterable table and
heatmaps, a row opened in the live view, and "watch live" adding the pair to the running engine
(the Hub's status and the page's pair picker have it, the live view shows its engine state).

This module runs after the other browser tests on the shared server: the pair it adds stays."""

from __future__ import annotations

import re
import time

import pytest
from conftest import SCREENSHOTS, screenshot, to_docs
from playwright.sync_api import expect
from test_live import SOURCE_JS
from test_tools import info, open_tab

from actors.screen import screen_frame
from engine.screen import save_screen, screen_bars
from tests.engine.test_screen import generated_bars

pytestmark = pytest.mark.ui

#: the generated symbols under names the demo engine streams (all stepped by one PairActor)
NAMES = {"AAAUSDT": "ADAUSDT", "BBBUSDT": "XRPUSDT", "CCCUSDT": "LTCUSDT",
         "DDDUSDT": "DOGEUSDT", "EEEUSDT": "BNBUSDT"}  # fmt: skip


@pytest.fixture(scope="module")
def saved(hub, ray_cluster):
    """A screen saved in the server's store, as ``pairstack screen`` saves one."""
    bars = {NAMES[s]: b for s, b in generated_bars(0).items() if s in NAMES}
    result = screen_bars(bars, "5m")
    store = ray_cluster.get(hub.config.remote(), timeout=30).store.path
    save_screen(store, result)
    return screen_frame(result.table)


def test_screen_tab_shows_the_saved_screen_opens_and_watches_a_pair(page, hub, ray_cluster,
                                                                    saved):  # fmt: skip
    page.wait_for_function(SOURCE_JS, arg=5)
    open_tab(page, "Screen")
    origin = page.locator(".ps-screen-source")
    expect(origin).to_contain_text("Saved screen")
    expect(origin).to_contain_text(f"5 symbols, {len(saved)} pairs")
    table = page.locator(".ps-screen-table")
    first = table.locator(".tabulator-row").first
    expect(first.locator(".tabulator-cell[tabulator-field='pair']")).to_have_text(saved["pair"][0])
    expect(page.locator(".ps-pvalue-heatmap canvas").first).to_be_visible()
    cells = page.evaluate(
        """() => { for (const d of Bokeh.documents) { const s = d.get_model_by_name(
             'ps-corr-source'); if (s) return Array.from(s.data.corr) } }"""
    )
    assert len(cells) == 25  # the 5 symbols of the screen
    # a pair the engine does not step yet, found with the pair column's header filter
    live = ray_cluster.get(hub.pairs.remote(), timeout=30)
    pair = next(p for p in saved["pair"] if p not in live)
    y = pair.split("/")[0]
    box = table.locator(".tabulator-col[tabulator-field='pair'] input")
    box.press_sequentially(y)
    box.press("Enter")
    rows = table.locator(".tabulator-row")
    expect(rows).to_have_count(int(saved["pair"].str.contains(y).sum()))
    for text in rows.locator(".tabulator-cell[tabulator-field='pair']").all_inner_texts():
        assert y in text
    rows.locator(".tabulator-cell[tabulator-field='pair']", has_text=pair).click()
    screenshot(page, "screen_tab")
    to_docs(SCREENSHOTS / "screen_tab.png", "screen.png")
    page.locator(".ps-open-pair button").click()
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text(pair)
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("recomputed")
    # watch it live: the Hub steps it, the picker lists it, the live view shows engine state
    open_tab(page, "Screen")
    page.locator(".ps-watch-live button").click()
    expect(page.locator(".ps-screen-message")).to_contain_text(f"{pair} now steps live")
    rows_now = ray_cluster.get(hub.status.remote(), timeout=30)["pairs"]
    assert pair in [r["pair"] for r in rows_now]
    expect(page.locator(".ps-pair-select select option", has_text=pair)).to_have_count(1)
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text(
        re.compile(f"{re.escape(pair)} .* live engine state")
    )
    deadline = time.monotonic() + 60
    while "warming up" in info(page) or " 0 bars" in info(page):
        assert time.monotonic() < deadline, info(page)
        time.sleep(0.5)
