"""The live page: charts of the first configured pair on load, z moving, settings switching."""

from __future__ import annotations

import re

import pytest
from conftest import screenshot
from playwright.sync_api import expect

pytestmark = pytest.mark.ui

SOURCE_JS = """(min) => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const s = doc.get_model_by_name('ps-pair-source');
    if (s && s.data.ts && s.data.ts.length >= min) return true;
  }
  return false;
}"""

READ_JS = """() => {
  for (const doc of Bokeh.documents) {
    const s = doc.get_model_by_name('ps-pair-source');
    if (s) return Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, Array.from(v)]));
  }
  return null;
}"""


def source(page) -> dict:
    return page.evaluate(READ_JS)


def test_first_pair_charts_render_on_load(page, server):
    # no click: the first configured pair's charts fill from the live engine
    page.wait_for_function(SOURCE_JS, arg=5)
    for name in ("prices", "beta", "spread", "z", "position"):
        pane = page.locator(f".ps-chart-{name}")
        expect(pane).to_be_visible()
        assert pane.bounding_box()["height"] > 100
        assert page.locator(f".ps-chart-{name} canvas").count() > 0
    info = page.locator(".ps-chart-info .ps-info").inner_text()
    assert "ETHUSDT/BTCUSDT" in info and "live engine state" in info
    expect(page.locator(".ps-feed-banner.ps-state-live")).to_be_visible()


def test_z_moves_as_bars_arrive(page):
    z = page.locator(".ps-kpi-z")
    expect(z).to_have_text(re.compile(r"^-?\d+\.\d{3}$"))
    first = z.inner_text()
    n0 = len(source(page)["ts"])
    # a number, and not the first one
    expect(z).to_have_text(re.compile(rf"^(?!{re.escape(first)}$)-?\d+\.\d{{3}}$"))
    page.wait_for_function(SOURCE_JS, arg=n0 + 1)
    data = source(page)
    assert data["ts"] == sorted(data["ts"]) and len(data["ts"]) > n0
    screenshot(page, "live")
