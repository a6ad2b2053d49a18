"""History tab benchmark: first draw and bytes sent for 90 days of 1m bars, and a zoom.

The real ``panel serve ui/`` (config/demo.yaml as the UI tests run it, its own store and Ray)
whose store holds 90 days of 1m bars of two cointegrated symbols (129,600 bars each,
``tests/history_kit.py``), driven by headless Chromium. No peer: the figures are what a user
sees. ``--quick`` uses 10 days.

- ``history_first_draw``: from pressing Show to all seven panels drawn, in a fresh session;
  the first draw of the server (the ResearchActor starts, kernels load) and the median of the
  next ones. The actor reads the bars, aligns them, runs the pair step and the backtest; the
  session downsamples each line (LTTB) to about 1,000 points.
- ``history_bytes``: websocket bytes the browser received for that draw (the History part),
  and in the whole session from page load (the page's JS and CSS come over HTTP, cached).
- ``history_zoom``: zoomed in with the mouse wheel to under an eighth of the range: from the
  last wheel event to every line re-aggregated over the zoomed range (the server also answers
  the range changes of the earlier wheel events, each about 0.13 s of LTTB per line).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import yaml


def run(quick: bool) -> list[dict]:
    from playwright.sync_api import sync_playwright

    from tests.history_kit import X, Y, write_history
    from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, Server, demo_config
    from tests.ui.history_page import draw_history, open_history, zoom_history

    days = 10 if quick else 90
    draws = 2 if quick else 4
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = demo_config(Path(tmp))
        raw = yaml.safe_load(config.read_text())
        raw["analytics"].update({"zscore_window": 240, "kalman": {"delta": 1.0e-8}})
        config.write_text(yaml.safe_dump(raw))
        write_history(Path(tmp) / "store", days=days)
        server = Server(config, "", Path(tmp) / "panel.log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                times, history_bytes, session_bytes, zooms = [], [], [], []
                for i in range(draws):
                    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = ctx.new_page()
                    got: list[int] = []
                    page.on(
                        "websocket",
                        lambda ws, got=got: ws.on(
                            "framereceived", lambda p, got=got: got.append(len(p))
                        ),
                    )
                    page.goto(server.url)
                    open_history(page)
                    before = sum(got)
                    times.append(draw_history(page, Y, X, "1m"))
                    page.wait_for_timeout(300)
                    history_bytes.append(sum(got) - before)
                    session_bytes.append(sum(got))
                    if i:
                        zooms.append(zoom_history(page, days * 86_400_000)[3])
                    ctx.close()
                browser.close()
        finally:
            server.stop()
    bars = days * 24 * 60
    rows.append(
        {
            "case": f"history_first_draw_{days}d_1m",
            "ours_s": statistics.median(times[1:]),
            "first_of_server_s": times[0],
            "max_s": max(times[1:]),
            "bars_per_leg": bars,
            "draws": len(times) - 1,
        }
    )
    rows.append(
        {
            "case": f"history_bytes_{days}d_1m",
            "history_bytes": statistics.median(history_bytes),
            "session_ws_bytes": max(session_bytes),
            "limit_bytes": 3_000_000,
        }
    )
    rows.append(
        {
            "case": "history_zoom_reaggregate",
            "ours_s": statistics.median(zooms),
            "max_s": max(zooms),
            "zooms": len(zooms),
        }
    )
    return rows
