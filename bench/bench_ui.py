"""Dashboard benchmark: time to first full paint, and update cadence with many sessions open.

The real ``panel serve ui/`` on config/demo.yaml (store in a tmp dir, its own Ray cluster)
driven by headless Chromium. No peer: the figures are what a user sees.

- ``first_paint``: from ``goto`` to the page showing the first pair's five charts with data
  (engine already running), over a few fresh sessions.
- ``cadence``: N sessions open at once, each on one of the demo's pairs; in every page a 50 ms
  probe records when the charts' data source changes and how old its last bar is (wall time
  minus the bar's end, so it includes ``feed.lateness_ms``).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

PROBE_JS = """() => {
  window.__ps = {t: [], age: []};
  let last = null;
  setInterval(() => {
    for (const doc of Bokeh.documents) {
      const s = doc.get_model_by_name('ps-pair-source');
      if (!s || !s.data.ts || !s.data.ts.length) continue;
      const ts = s.data.ts[s.data.ts.length - 1];
      if (ts !== last) {
        last = ts;
        window.__ps.t.push(performance.now());
        window.__ps.age.push(Date.now() - (ts + 1000));
      }
    }
  }, 50);
}"""

READY_JS = """() => {
  if (!window.Bokeh) return false;
  for (const doc of Bokeh.documents) {
    const s = doc.get_model_by_name('ps-pair-source');
    if (s && s.data.ts && s.data.ts.length > 0) return true;
  }
  return false;
}"""


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run(quick: bool) -> list[dict]:
    from playwright.sync_api import sync_playwright

    from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, Server, demo_config

    sessions = 3 if quick else 10
    window_s = 10.0 if quick else 30.0
    paints = 2 if quick else 5
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        server = Server(demo_config(Path(tmp)), "", Path(tmp) / "panel.log")
        rows.append({"case": "server_ready", "ours_s": time.perf_counter() - started})
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                rows += _first_paint(browser, server.url, paints)
                rows += _cadence(browser, server.url, sessions, window_s)
                browser.close()
        finally:
            server.stop()
    return rows


def _first_paint(browser, url: str, n: int) -> list[dict]:
    times = []
    for i in range(n + 1):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function(READY_JS, timeout=120_000, polling=20)
        for name in ("prices", "beta", "spread", "z", "position"):
            page.locator(f".ps-chart-{name} canvas").first.wait_for(state="attached")
        if i:  # the first visit warms the engine and the bridge's bars
            times.append(time.perf_counter() - t0)
        ctx.close()
    return [
        {
            "case": "first_full_paint",
            "ours_s": statistics.median(times),
            "max_s": max(times),
            "sessions": n,
        }
    ]


def _cadence(browser, url: str, sessions: int, window_s: float) -> list[dict]:
    pairs = [
        "ETHUSDT/BTCUSDT",
        "SOLUSDT/BTCUSDT",
        "SOLUSDT/ETHUSDT",
        "XRPUSDT/BNBUSDT",
        "ADAUSDT/BNBUSDT",
        "LTCUSDT/DOGEUSDT",
    ]
    ctxs, pages = [], []
    for i in range(sessions):
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_function(READY_JS, timeout=120_000)
        page.locator(".ps-pair-select select").select_option(pairs[i % len(pairs)])
        ctxs.append(ctx)
        pages.append(page)
    for page in pages:
        page.evaluate(PROBE_JS)
    time.sleep(window_s)
    intervals, ages, rates = [], [], []
    for page in pages:
        rec = page.evaluate("() => window.__ps")
        t = rec["t"]
        intervals += [(b - a) / 1000.0 for a, b in itertools.pairwise(t)]
        ages += [a / 1000.0 for a in rec["age"]]
        rates.append(len(t) / window_s)
    for ctx in ctxs:
        ctx.close()
    return [
        {
            "case": f"update_cadence_{sessions}_sessions",
            "ours_s": statistics.median(intervals) if intervals else float("nan"),
            "p95_interval_s": _pct(intervals, 0.95),
            "updates_per_s_min": min(rates),
            "updates_per_s_mean": statistics.fmean(rates),
            "bar_age_p50_s": _pct(ages, 0.5),
            "bar_age_p95_s": _pct(ages, 0.95),
            "pairs": min(sessions, len(pairs)),
        }
    ]
