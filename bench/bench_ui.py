"""Dashboard benchmark: time to first full paint, and update cadence with many sessions open.

The real ``panel serve ui/`` on a generated simulator config of 100 live pairs (30 symbols in
3 cointegrated groups of 10, 1 s bars, one PairActor for all pairs: ``ray.pairs_per_actor``
100 on 2 cores; store in a tmp dir, its own Ray cluster) driven by headless Chromium. No peer:
the figures are what a user sees. ``--quick`` uses 12 pairs and 3 sessions.

- ``server_ready``: from starting ``panel serve`` to its page answering (engine started).
- ``first_paint``: from ``goto`` to the page showing the first pair's five charts with data
  (engine already running), over a few fresh sessions.
- ``cadence``: N sessions open at once, each on another live pair; in every page a 50 ms probe
  records when the charts' data source changes and how old its last bar is (wall time minus
  the bar's end, so it includes ``feed.lateness_ms``); the server process's CPU (user + system
  s per wall s, from /proc; the engine's Ray workers are other processes) over that window.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

#: symbols per cointegrated group of the generated config
GROUP_SIZE = 10

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


def live_config(tmp: Path, n_symbols: int, n_pairs: int) -> tuple[Path, list[str]]:
    """config/demo.yaml's feed and analytics (short windows) with ``n_symbols`` made-up symbols in
    groups of ``GROUP_SIZE`` and ``n_pairs`` within-group pairs taken round-robin over the
    groups, all in one PairActor; no alert rules. Returns the path and the pair names."""
    from tests.ui.conftest import demo_config

    raw = yaml.safe_load(demo_config(tmp).read_text())
    symbols = [f"S{i:02d}USDT" for i in range(n_symbols)]
    groups = [symbols[i : i + GROUP_SIZE] for i in range(0, n_symbols, GROUP_SIZE)]
    per_group = [list(itertools.combinations(g, 2)) for g in groups]
    ordered = [p for row in itertools.zip_longest(*per_group) for p in row if p is not None]
    if len(ordered) < n_pairs:
        raise ValueError(f"{n_symbols} symbols make only {len(ordered)} within-group pairs")
    pairs = [{"y": y, "x": x} for x, y in ordered[:n_pairs]]
    raw.update({"symbols": symbols, "pairs": pairs, "alerts": []})
    raw["simulator"]["groups"] = groups
    raw["ray"]["pairs_per_actor"] = n_pairs
    path = tmp / "live.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, [f"{p['y']}/{p['x']}" for p in pairs]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(quick: bool) -> list[dict]:
    from playwright.sync_api import sync_playwright

    from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, Server

    n_symbols, n_pairs = (10, 12) if quick else (30, 100)
    sessions = 3 if quick else 10
    window_s = 10.0 if quick else 30.0
    paints = 2 if quick else 5
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        config, pairs = live_config(Path(tmp), n_symbols, n_pairs)
        started = time.perf_counter()
        server = Server(config, "", Path(tmp) / "panel.log")
        rows.append(
            {"case": "server_ready", "ours_s": time.perf_counter() - started, "pairs": n_pairs}
        )
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                rows += _first_paint(browser, server.url, paints)
                rows += _cadence(browser, server, pairs, sessions, window_s)
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


def _cadence(browser, server, pairs: list[str], sessions: int, window_s: float) -> list[dict]:
    ctxs, pages = [], []
    # spread the sessions over the pair list (and so over the symbol groups)
    shown = [pairs[(i * len(pairs)) // sessions] for i in range(sessions)]
    for pair in shown:
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        page = ctx.new_page()
        page.goto(server.url)
        page.wait_for_function(READY_JS, timeout=120_000)
        page.locator(".ps-pair-select select").select_option(pair, timeout=120_000)
        ctxs.append(ctx)
        pages.append(page)
    for page in pages:
        page.evaluate(PROBE_JS)
    cpu0, t0 = _cpu_s(server.proc.pid), time.perf_counter()
    time.sleep(window_s)
    cpu = (_cpu_s(server.proc.pid) - cpu0) / (time.perf_counter() - t0)
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
            "server_cpu": cpu,
            "pairs": len(pairs),
            "pairs_shown": len(set(shown)),
        }
    ]
