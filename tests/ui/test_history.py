"""The History tab against the real server: 90 days of 1m bars of two stored symbols.

A server of its own (config/demo.yaml as the other UI tests, a store of its own) whose store
holds 90 days of 1m bars of HISTAUSDT and HISTBUSDT (``tests/history_kit.py``) before it starts.
The page opens History, picks the two stored symbols and draws: seven linked panels (one x
range), every line downsampled on the server, all the websocket bytes the page received well
under 3 MB; a zoom (the mouse wheel over a panel: Bokeh's range change, heard by the server)
brings new data with many more points inside the zoomed range to every panel; Export HTML
downloads a standalone file that loads nothing from outside. The screenshot
goes to docs/history.png (the README shows it) with PAIRSTACK_UPDATE_DOCS=1.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import (
    SCREENSHOTS,
    PageLog,
    Server,
    demo_config,
    screenshot,
    server_exceptions,
    to_docs,
)
from history_kit import MINUTE, T0, X, Y, write_history
from history_page import (
    PANELS,
    PLOTS_JS,
    SOURCES_JS,
    draw_history,
    open_history,
    zoom_history,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

DAYS = 90
MAX_BYTES = 3_000_000


@pytest.fixture(scope="module")
def history_server(ray_address, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-history")
    config = demo_config(tmp)
    raw = yaml.safe_load(config.read_text())
    # a slow Kalman hedge and a 4-hour z window on 1m bars: fewer, longer trades
    raw["analytics"].update({"zscore_window": 240, "kalman": {"delta": 1.0e-8}})
    config.write_text(yaml.safe_dump(raw))
    write_history(tmp / "store", days=DAYS)
    srv = Server(config, ray_address, tmp / "panel.log")
    yield srv
    srv.stop()
    raised = server_exceptions(srv.log_path.read_text())
    assert not raised, f"exception in the server log: {raised[:5]}"


def _z(sources: list[dict]) -> dict:
    (z,) = [s for s in sources if s["cols"] == ["z"]]
    return z


def test_history_draws_90_days_linked_downsampled_and_reaggregates_on_zoom(history_server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(90_000)
    log = PageLog(page)
    received = []  # bytes of every websocket frame the browser received
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: received.append(len(payload))),
    )
    page.goto(history_server.url)
    open_history(page)
    before = sum(received)
    drawn_s = draw_history(page, Y, X, "1m")
    summary = page.locator(".ps-history-summary")
    n_bars = int(summary.get_attribute("data-bars"))
    assert n_bars == DAYS * 24 * 60
    sources = page.evaluate(SOURCES_JS, [0, 0])
    assert len(sources) == PANELS, sources
    for s in sources:  # downsampled on the server: about the plot's width, not 129,600
        assert 100 < s["n"] <= 1_100, s
        assert s["first"] == pytest.approx(T0) and s["last"] >= T0 + (n_bars - 2) * MINUTE
    plots = page.evaluate(PLOTS_JS)
    assert len(plots) == PANELS
    assert len({p["x_range"] for p in plots}) == 1  # one linked x range
    assert all("HoverTool" in p["tools"] and "SaveTool" in p["tools"] for p in plots), plots
    history_bytes = sum(received) - before
    assert sum(received) < MAX_BYTES, f"{sum(received)} websocket bytes"
    print(f"history drawn in {drawn_s:.2f} s, {history_bytes} bytes for it, {sum(received)} total")
    page.wait_for_timeout(500)
    screenshot(page, "history")
    page.locator(".ps-history-plot").screenshot(path=str(SCREENSHOTS / "history_plot.png"))
    to_docs(SCREENSHOTS / "history_plot.png", "history.png")
    assert (SCREENSHOTS / "history.png").exists()

    # zoom in with the mouse wheel over the first panel (Bokeh's xwheel_zoom: a RangesUpdate
    # the server hears): the server re-aggregates the visible range, every panel follows
    full = DAYS * 86_400_000
    lo, hi, shown, zoom_s = zoom_history(page, full)
    sources = page.evaluate(SOURCES_JS, [lo, hi])
    assert len(sources) == PANELS and all(s["n"] <= 1_100 for s in sources), sources
    assert full / 100 < hi - lo < full / 8 and shown < 200
    print(
        f"zoom to {(hi - lo) / 86_400_000:.1f} days: {shown} -> {_z(sources)['inside']} z "
        f"points inside, re-aggregated in {zoom_s:.2f} s"
    )

    # Export HTML: one standalone file, nothing loaded from outside
    with page.expect_download() as dl:
        page.locator(".ps-history-export button").click()
    text = Path(dl.value.path()).read_text()
    assert dl.value.suggested_filename == f"history-{Y}-{X}.html"
    assert "Bokeh" in text and f"{Y}/{X}" in text
    assert not re.search(r"<(script|link)[^>]*(src|href)=\"https?:", text)  # resources inline
    context.close()
    assert log.hosts <= {"127.0.0.1"}, f"requests left 127.0.0.1: {sorted(log.hosts)}"
    assert not log.errors, f"browser console errors: {log.errors}"


def test_history_error_is_shown(history_server, browser):
    """A range without bars says why, nothing is drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto(history_server.url)
    page.locator(".ps-tabs .bk-tab", has_text="History").first.click()
    expect(page.locator(".ps-history-message")).to_contain_text("Pick a pair")
    page.locator(".ps-history-timeframe select").select_option("1m")
    page.locator(".ps-history-y select").select_option(Y)
    page.locator(".ps-history-x select").select_option(X)
    page.locator(".ps-history-start input").fill("2020-01-01")
    page.locator(".ps-history-end input").fill("2020-01-02")
    page.locator(".ps-history-end input").press("Enter")
    page.locator(".ps-history-show button").click()
    expect(page.locator(".ps-history-message .ps-error")).to_contain_text("Cannot show")
    context.close()
