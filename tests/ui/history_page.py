"""What the History tab's browser test and bench do in a page: open the tab, draw a pair, and
read the History lines' Bokeh data sources and their shared x range out of the document.

Imported as ``history_page`` by tests/ui (pytest puts the directory on the path) and as
``tests.ui.history_page`` by bench/bench_history.py.
"""

from __future__ import annotations

import time

from playwright.sync_api import expect

#: History panels: both closes, beta, spread, z, position, equity
PANELS = 7

#: every History line's data source (HoloViews names the x column "time"): points, first/last
#: x, and how many points fall in [lo, hi)
SOURCES_JS = """([lo, hi]) => {
  const out = [];
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    for (const m of doc.all_models) {
      const d = m.data;
      if (!d || !d.time || !d.time.length) continue;
      const t = Array.from(d.time);
      const cols = Object.keys(d).filter((k) => k !== 'time');
      out.push({n: t.length, first: t[0], last: t[t.length - 1], cols: cols,
                inside: t.filter((v) => v >= lo && v < hi).length});
    }
  }
  return out;
}"""

#: the History figures (plots whose renderers draw a "time" source): their x range ids and
#: whether each has a hover and a save tool
PLOTS_JS = """() => {
  const out = [];
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    for (const m of doc.all_models) {
      if (!m.x_range || !m.renderers || !m.toolbar) continue;
      const mine = m.renderers.some((r) => r.data_source && r.data_source.data
                                     && r.data_source.data.time);
      if (!mine) continue;
      const tools = m.toolbar.tools.map((t) => t.type);
      out.push({x_range: m.x_range.id, tools: tools});
    }
  }
  return out;
}"""

#: the History plots' shared x range [start, end] (ms)
XRANGE_JS = """() => {
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      if (!m.x_range || !m.renderers) continue;
      if (m.renderers.some((r) => r.data_source && r.data_source.data
                           && r.data_source.data.time)) {
        return [m.x_range.start, m.x_range.end];
      }
    }
  }
  return null;
}"""

#: the x values of the z line's source
TIMES_JS = """() => {
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      if (m.data && m.data.time && m.data.z) return Array.from(m.data.time);
    }
  }
  return [];
}"""


def open_history(page) -> None:
    """Click the History tab and wait for the store's catalog (the pickers filled)."""
    page.locator(".ps-tabs .bk-tab", has_text="History").first.click()
    expect(page.locator(".ps-history-message")).to_contain_text("Pick a pair", timeout=90_000)


def draw_history(page, y: str, x: str, timeframe: str) -> float:
    """Pick ``y``/``x`` (stored symbols) and ``timeframe``, press Show, and wait until the
    summary names the pair and every panel's line has data; returns the seconds from the click."""
    page.locator(".ps-history-timeframe select").select_option(timeframe)
    page.locator(".ps-history-pair select").select_option("")
    page.locator(".ps-history-y select").select_option(y)
    page.locator(".ps-history-x select").select_option(x)
    started = time.perf_counter()
    page.locator(".ps-history-show button").click()
    expect(page.locator(".ps-history-summary")).to_contain_text(
        f"{y}/{x} · {timeframe}", timeout=90_000
    )
    page.wait_for_function(f"() => ({SOURCES_JS})([0, 0]).length >= {PANELS}", timeout=90_000)
    return time.perf_counter() - started


def zoom_history(page, full_ms: float) -> tuple[float, float, int, float]:
    """Zoom in with the mouse wheel over the first panel (Bokeh's xwheel_zoom, as a user does:
    the server hears the range change) until under an eighth of ``full_ms`` shows, then wait
    until every line holds over 5x the points it had inside that range (the server
    re-aggregated it). Returns (lo, hi) ms, the z line's points inside before, and the seconds
    from the last wheel event to the re-aggregated lines (each wheel event is a range change
    the server answers too, so this includes answering those still queued)."""
    old = page.evaluate(TIMES_JS)
    box = page.locator(".ps-history-plot").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + 130)
    for _ in range(50):
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(100)
        lo, hi = page.evaluate(XRANGE_JS)
        if hi - lo < full_ms / 8:
            break
    started = time.perf_counter()
    lo, hi = page.evaluate(XRANGE_JS)
    shown = sum(lo <= t < hi for t in old)
    page.wait_for_function(
        f"() => {{ const s = ({SOURCES_JS})([{lo}, {hi}]); "
        f"return s.length === {PANELS} && s.every((s) => s.inside > {5 * max(shown, 20)}); }}",
        timeout=30_000,
    )
    return lo, hi, shown, time.perf_counter() - started
