"""Spread tests on demand (ADF, Engle-Granger, half-life, verdict) and the backtest of the
current settings (equity, drawdown, trades, stats)."""

from __future__ import annotations

import html
import math

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource
from panel.viewable import Viewer

from engine.errors import PairstackError
from ui import services
from ui.views.widgets import action_button, read_only_table, time_figure

_TOOLS = "xpan,xwheel_zoom,box_zoom,reset,hover"  # backtest charts: hover, no save


def _num(v: float, fmt: str = "{:.4g}") -> str:
    return "–" if v is None or not math.isfinite(v) else fmt.format(v)


class TestsView(Viewer):
    """Button ``ps-run-tests``; result in ``ps-tests-result``."""

    title = "Tests"

    def __init__(self, app: object, **params):
        super().__init__(**params)
        self.app = app
        self.button = action_button("Run ADF / Engle-Granger / half-life", "ps-run-tests")
        self.result = pn.pane.HTML("", css_classes=["ps-tests-result"])
        self.button.on_click(lambda _: self.run())

    def run(self) -> None:
        frame = self.app.frame
        try:
            t = services.spread_tests(frame, self.app.state.live_params.price)
        except PairstackError as exc:
            self.result.object = f"<p class='ps-error'>Cannot test: {html.escape(str(exc))}</p>"
            return
        rows = [
            ("ADF statistic (spread)", _num(t.adf_stat)),
            ("ADF p-value", _num(t.adf_pvalue)),
            ("Engle-Granger statistic (legs)", _num(t.eg_stat)),
            ("Engle-Granger p-value", _num(t.eg_pvalue)),
            (
                "half-life (bars)",
                _num(t.half_life, "{:.1f}")
                if math.isfinite(t.half_life)
                else "∞ (no AR(1) reversion)",
            ),
            ("bars used", str(t.nobs)),
        ]
        body = "".join(f"<tr><td>{k}</td><td class='ps-num'>{v}</td></tr>" for k, v in rows)
        self.result.object = (
            f"<p class='ps-verdict'><b>{html.escape(t.verdict)}</b></p>"
            f"<p>{html.escape(frame.pair)} · {frame.timeframe} · {len(frame)} bars on screen</p>"
            f"<table class='ps-tests-table'>{body}</table>"
        )

    def on_cache(self, cache: object) -> None:
        """Tests run on demand only."""

    def __panel__(self):
        return pn.Column(self.button, self.result)


class BacktestView(Viewer):
    """Button ``ps-run-backtest``; equity ``ps-equity`` (source ``ps-equity-source``),
    drawdown, trades table ``ps-trades`` and stats ``ps-backtest-stats``."""

    title = "Backtest"

    def __init__(self, app: object, **params):
        super().__init__(**params)
        self.app = app
        self.button = action_button("Backtest current settings", "ps-run-backtest")
        self.message = pn.pane.HTML("", css_classes=["ps-backtest-message"])
        self.source = ColumnDataSource(
            {"ts": np.empty(0), "equity": np.empty(0), "drawdown": np.empty(0)},
            name="ps-equity-source",
        )
        eq = time_figure("Equity (USDT)", 220, tools=_TOOLS)
        eq.line("ts", "equity", source=self.source, color="#2ca02c")
        dd = time_figure("Drawdown", 150, tools=_TOOLS, x_range=eq.x_range)
        dd.varea("ts", y1=0.0, y2="drawdown", source=self.source, color="#d62728", alpha=0.4)
        self.charts = pn.Column(
            pn.pane.Bokeh(eq),
            pn.pane.Bokeh(dd),
            css_classes=["ps-equity"],
            sizing_mode="stretch_width",
        )
        self.stats = pn.pane.HTML("", css_classes=["ps-backtest-stats"], width=380)
        self.trades = read_only_table("ps-trades", 260, pagination="local", page_size=10)
        self.pending = False
        self.job = None  # the bridge Job of the running backtest
        self.running: tuple[str, str] = ("", "")  # (pair, timeframe) it runs on
        self.button.on_click(lambda _: self.run())

    def run(self) -> None:
        """Hand the backtest of the bars behind the view to the bridge (it runs on Ray); the
        result is shown by ``on_cache`` once it is in."""
        app = self.app
        if self.job is not None and not self.job.finished:
            return  # one at a time
        legs = app.leg_bars()
        if legs is None:
            self.pending = True  # runs as soon as the bridge has fetched the bars
            self.message.object = "<p>Fetching the recent bars of both legs…</p>"
            return
        self.pending = False
        s = app.settings
        self.job = app.state.bridge.backtest(
            legs[0],
            legs[1],
            app.params(),
            app.state.config.strategy,
            s.timeframe,
            legs=s.legs,
            store=app.state.config.store.path,
            max_carry=app.state.config.analytics.max_carry,
        )
        self.running = (s.pair, s.timeframe)
        self.message.object = (
            f"<p class='ps-backtest-running'>Backtest of {html.escape(s.pair)} · {s.timeframe} "
            "running on the engine…</p>"
        )

    def show(self, res: object) -> None:
        pair, tf = self.running
        eq = res.equity
        # called from the periodic callback; a raw Bokeh model is changed inside unlocked(),
        # which holds the document and sends the change itself
        with pn.io.unlocked():
            self.source.data = {
                "ts": eq.ts.astype(np.float64),
                "equity": eq.equity,
                "drawdown": services.drawdown(eq.equity),
            }
        self.stats.object = (
            "<table>"
            + "".join(
                f"<tr><td>{html.escape(str(k))}</td><td class='ps-num'>{_fmt_stat(v)}</td></tr>"
                for k, v in res.stats.items()
            )
            + "</table>"
        )
        trades = res.trades.to_pandas()
        self.trades.value = trades
        self.message.object = (
            f"<p class='ps-backtest-summary'>{html.escape(pair)} · {tf} · "
            f"{eq.ts.size} bars · {len(trades)} trades · total return "
            f"{_num(res.stats.get('total_return', math.nan), '{:.4%}')}</p>"
        )

    def on_cache(self, cache: object) -> None:
        """Backtests run on demand; a request made before the bars arrived runs now, and a
        finished one is shown."""
        if self.pending:
            self.run()
        job = self.job
        if job is None or not job.finished:
            return
        self.job = None
        if job.state == "failed":
            self.message.object = f"<p class='ps-error'>{html.escape(job.error or '')}</p>"
        else:
            self.show(job.result)

    def __panel__(self):
        return pn.Column(
            self.button,
            self.message,
            self.charts,
            pn.Row(self.stats, self.trades),
            sizing_mode="stretch_width",
        )


def _fmt_stat(v: object) -> object:
    if isinstance(v, float):
        return _num(v, "{:.6g}")
    return v
