"""The tools against the real server: switching, tests, backtest, screen, export, upload, alerts."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import screenshot
from playwright.sync_api import expect
from test_live import SOURCE_JS, source

from engine.align import align_bars
from engine.pairstep import PairParams, run_pair
from engine.upload import parse_uploads
from tests.kit import cointegrated_pair

pytestmark = pytest.mark.ui


MINUTE_BARS_JS = """() => {
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const s = doc.get_model_by_name('ps-pair-source');
    if (s && s.data.ts && s.data.ts.length > 0)
      return Array.from(s.data.ts).every((t) => t % 60000 === 0);
  }
  return false;
}"""


def info(page) -> str:
    return page.locator(".ps-chart-info .ps-info").inner_text()


def open_tab(page, name: str) -> None:
    page.locator(".ps-tabs .bk-tab", has_text=name).first.click()


def test_switching_pair_timeframe_and_hedge_changes_the_charts(page):
    page.wait_for_function(SOURCE_JS, arg=5)
    eth = source(page)
    page.locator(".ps-pair-select select").select_option("SOLUSDT/BTCUSDT")
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("SOLUSDT/BTCUSDT")
    page.wait_for_function(SOURCE_JS, arg=5)
    sol = source(page)
    assert not np.allclose(sol["close_y"][-1], eth["close_y"][-1])
    # hedge: rolling OLS is recomputed over the recent bars; beta in use is then the OLS beta
    page.locator(".ps-hedge button", has_text="Rolling OLS").click()
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("rolling OLS")
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("recomputed")
    page.wait_for_function(SOURCE_JS, arg=45)  # past the OLS window (30 bars)
    data = source(page)
    beta = np.array(data["beta"], dtype=float)
    assert np.isfinite(beta).sum() >= 10
    np.testing.assert_array_equal(beta, np.array(data["beta_ols"], dtype=float))
    assert np.isfinite(np.array(data["z"], dtype=float)).any()
    screenshot(page, "rolling_ols")
    # timeframe: 1m bars are labelled by whole minutes
    page.locator(".ps-timeframe button", has_text="1m").click()
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("· 1m ·")
    # the label and the chart data reach the browser as separate document events
    page.wait_for_function(MINUTE_BARS_JS)
    data = source(page)
    assert data["ts"] and all(int(t) % 60_000 == 0 for t in data["ts"])
    page.locator(".ps-timeframe button", has_text="1s").click()
    page.locator(".ps-hedge button", has_text="Kalman").click()
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("live engine state")


def test_spread_tests_and_backtest(page):
    page.wait_for_function(SOURCE_JS, arg=20)
    open_tab(page, "Tests")
    page.locator(".ps-run-tests button").click()
    verdict = page.locator(".ps-tests-result .ps-verdict")
    expect(verdict).to_contain_text(re.compile("stationary|cointegrated|mean-reverting", re.I))
    expect(page.locator(".ps-tests-result")).to_contain_text("Engle-Granger p-value")
    open_tab(page, "Backtest")
    page.locator(".ps-run-backtest button").click()
    # it runs on Ray (a task; the first one starts a worker process): "running…" meanwhile
    expect(page.locator(".ps-backtest-running")).to_be_visible()
    expect(page.locator(".ps-backtest-summary")).to_contain_text("trades", timeout=90_000)
    eq = page.evaluate(
        """() => { for (const d of Bokeh.documents) { const s = d.get_model_by_name(
             'ps-equity-source'); if (s) return Array.from(s.data.equity) } }"""
    )
    assert len(eq) > 10 and all(np.isfinite(eq))
    expect(page.locator(".ps-backtest-stats")).to_contain_text("sharpe")
    screenshot(page, "backtest")


def test_screen_heatmap_and_open_pair(page):
    page.wait_for_function(SOURCE_JS, arg=40)
    open_tab(page, "Screen")
    summary = page.locator(".ps-screen-summary")
    for _ in range(30):  # the screen needs 30 bars of every symbol in the bridge's cache
        if summary.count():
            break
        page.locator(".ps-run-screen button").click()  # runs on the engine: progress, result
        page.wait_for_timeout(2000)
    expect(summary).to_contain_text("9 liquid symbols, 36 pairs")
    cells = page.evaluate(
        """() => { for (const d of Bokeh.documents) { const s = d.get_model_by_name(
             'ps-corr-source'); if (s) return Array.from(s.data.corr) } }"""
    )
    assert len(cells) == 81
    np.testing.assert_allclose(np.array(cells).reshape(9, 9).diagonal(), 1.0, rtol=1e-12)
    first = page.locator(".ps-screen-table .tabulator-row").first
    cell = first.locator(".tabulator-cell[tabulator-field='pair']")
    pair = cell.inner_text()
    cell.click()
    screenshot(page, "screen")
    info = page.locator(".ps-chart-info .ps-info")
    for _ in range(20):  # the row's selection reaches the server asynchronously
        page.locator(".ps-open-pair button").click()
        page.wait_for_timeout(500)
        if pair in info.inner_text():
            break
        if page.locator(".ps-screen-table").is_visible():
            cell.click()
    expect(info).to_contain_text(pair)
    expect(page.locator(".ps-chart-z")).to_be_visible()  # back on the Live tab


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_matches_the_snapshot(page, hub, fmt):
    import ray

    page.wait_for_function(SOURCE_JS, arg=10)
    open_tab(page, "Data")
    with page.expect_download() as dl:
        page.locator(f".ps-export-{fmt} button").click()
    data = Path(dl.value.path()).read_bytes()
    snap = ray.get(hub.snapshot.remote("ETHUSDT/BTCUSDT"))
    df = pd.read_csv(io.BytesIO(data)) if fmt == "csv" else pd.read_parquet(io.BytesIO(data))
    assert (df["pair"] == "ETHUSDT/BTCUSDT").all() and (df["timeframe"] == "1s").all()
    ts = (pd.to_datetime(df["ts"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
    common, i, j = np.intersect1d(ts.to_numpy(), snap["ts"], return_indices=True)
    assert common.size >= 10
    for col in ("close_y", "close_x", "beta", "beta_ols", "spread", "z", "position"):
        np.testing.assert_allclose(
            df[col].to_numpy(float)[i],
            snap[col].astype(float)[j],
            rtol=1e-15,
            atol=0,
            equal_nan=True,
            err_msg=col,
        )


def _leg_csv(close: np.ndarray, step_ms: int = 60_000) -> bytes:
    ts = 1_700_000_000_000 + step_ms * np.arange(close.size)
    df = pd.DataFrame(
        {
            "ts": ts,
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": 1.0,
        }
    )
    return df.to_csv(index=False, float_format="%.17g").encode()


def test_upload_good_is_analysed_bad_is_refused(page, tmp_path):
    page.wait_for_function(SOURCE_JS, arg=5)
    open_tab(page, "Data")
    y, x = cointegrated_pair(400, seed=3)
    files = {"AAAUSDT.csv": _leg_csv(y), "BBBUSDT.csv": _leg_csv(x)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    upload = page.locator(".ps-upload input[type=file]")
    upload.set_input_files([str(tmp_path / n) for n in files])
    expect(page.locator(".ps-upload-result")).to_contain_text("AAAUSDT/BBBUSDT")
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("uploaded bars")
    # analysed exactly like stored bars: the engine's align + pair step on the parsed bars
    bars = parse_uploads(files)
    aligned = align_bars(bars["AAAUSDT"], bars["BBBUSDT"])
    params = PairParams(delta=1e-4, obs_var=1e-3, init_var=1.0, ols_window=30, zscore_window=10)
    expected = run_pair(aligned.close_y, aligned.close_x, params)
    page.wait_for_function(SOURCE_JS, arg=400)
    shown = source(page)
    np.testing.assert_array_equal(np.array(shown["ts"], dtype=np.int64), aligned.ts)
    np.testing.assert_allclose(
        np.array(shown["z"], dtype=float), expected.z, rtol=1e-12, equal_nan=True
    )
    screenshot(page, "upload")
    # a bad file: an unparsable close on line 5
    lines = files["AAAUSDT.csv"].decode().splitlines()
    cells = lines[4].split(",")
    cells[4] = "oops"
    lines[4] = ",".join(cells)
    (tmp_path / "AAAUSDT-bad.csv").write_text("\n".join(lines))
    upload.set_input_files([str(tmp_path / "AAAUSDT-bad.csv"), str(tmp_path / "BBBUSDT.csv")])
    error = page.locator(".ps-upload-error")
    expect(error).to_contain_text("AAAUSDT-bad.csv: line 5, column 'close'")
    # the previous good upload stays on screen; nothing else changed
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("AAAUSDT/BBBUSDT")
    page.locator(".ps-back-live button").click()
    expect(page.locator(".ps-chart-info .ps-info")).to_contain_text("live engine state")


def test_alert_rule_fires_toast_and_history(page):
    page.wait_for_function(SOURCE_JS, arg=5)
    open_tab(page, "Alerts")
    page.locator(".ps-alert-pair select").select_option("SOLUSDT/ETHUSDT")
    page.locator(".ps-alert-kind select").select_option(label="|z| above")
    level = page.locator(".ps-alert-level input")
    level.fill("0.05")
    level.press("Enter")
    page.locator(".ps-alert-add button").click()
    expect(page.locator(".ps-alert-message")).to_contain_text("SOLUSDT/ETHUSDT abs_above 0.05")
    expect(page.locator(".ps-alert-rules")).to_contain_text("SOLUSDT/ETHUSDT abs_above 0.05")
    toast = page.locator(".notyf__toast", has_text="SOLUSDT/ETHUSDT abs_above 0.05")
    expect(toast.first).to_be_visible()
    expect(page.locator(".ps-alert-history")).to_contain_text("SOLUSDT/ETHUSDT abs_above 0.05")
    screenshot(page, "alerts")
    # remove the rule again: gone from the rules, still in the history
    page.locator(".ps-alert-rules .tabulator-cell", has_text="SOLUSDT/ETHUSDT abs_above").click()
    page.locator(".ps-alert-remove button").click()
    expect(page.locator(".ps-alert-message")).to_contain_text("Rule removed")
    expect(page.locator(".ps-alert-rules")).not_to_contain_text("SOLUSDT/ETHUSDT abs_above")
    expect(page.locator(".ps-alert-rules")).to_contain_text("ETHUSDT/BTCUSDT abs_above 2.5")
    expect(page.locator(".ps-alert-history")).to_contain_text("SOLUSDT/ETHUSDT abs_above 0.05")


def test_liquidity_filter_hides_thin_pairs(page):
    page.wait_for_function(SOURCE_JS, arg=5)
    select = page.locator(".ps-pair-select select option")
    expect(select).to_have_count(6)
    box = page.locator(".ps-min-volume input")
    box.fill("1e15")
    box.press("Enter")
    expect(select).to_have_count(1)  # only the pair on screen stays
    expect(select.first).to_have_text("ETHUSDT/BTCUSDT")
    box.fill("0")
    box.press("Enter")
    expect(select).to_have_count(6)
