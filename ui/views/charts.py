"""Live pair charts: both legs' prices, beta (Kalman vs rolling OLS), spread, z with bands,
position. One named ColumnDataSource (``ps-pair-source``) feeds every figure; new bars are
streamed into it with a bounded rollover, a changed selection replaces its data."""

from __future__ import annotations

import math

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, DataRange1d, HoverTool, LinearAxis, Range1d, Span
from bokeh.plotting import figure
from panel.viewable import Viewer

from engine.bars import RECENT_BARS
from ui.services import COLUMNS, PairFrame
from ui.views.widgets import time_figure

#: points kept in the charts (as many as the pair actors' ring buffers hold)
MAX_POINTS = RECENT_BARS


def _source_data(frame: PairFrame, band: float) -> dict[str, np.ndarray]:
    data = {k: np.asarray(frame.cols[k], dtype=np.float64) for k in COLUMNS}
    # an invisible line at +/- the entry level keeps the entry bands inside the z axis
    data["band"] = np.where(np.arange(len(frame)) % 2 == 0, band, -band)
    return data


def _figure(title: str, x_range=None, height: int = 190) -> figure:
    kw = {"x_range": x_range} if x_range is not None else {}
    return time_figure(title, height, active_scroll="xwheel_zoom", **kw)


class PairCharts(Viewer):
    """The live charts of one pair; ``show(frame, live)`` once per update."""

    def __init__(self, **params):
        super().__init__(**params)
        self.source = ColumnDataSource(
            {k: np.empty(0) for k in (*COLUMNS, "band")}, name="ps-pair-source"
        )
        self._key: tuple | None = None
        self._band = 0.0
        self._last_ts = -math.inf
        src = self.source
        self.prices = _figure("Prices")
        line_y = self.prices.line("ts", "close_y", source=src, color="#1f77b4", legend_label="y")
        self.prices.y_range = DataRange1d(renderers=[line_y])
        self.prices.extra_y_ranges = {"x": Range1d(0, 1)}
        self.prices.add_layout(LinearAxis(y_range_name="x"), "right")
        self.prices.line(
            "ts", "close_x", source=src, color="#ff7f0e", legend_label="x", y_range_name="x"
        )
        x_range = self.prices.x_range
        self.beta = _figure("Hedge ratio (beta)", x_range)
        self.beta.line("ts", "beta_kalman", source=src, color="#2ca02c", legend_label="Kalman")
        self.beta.line("ts", "beta_ols", source=src, color="#9467bd", legend_label="rolling OLS")
        self.spread = _figure("Spread", x_range)
        self.spread.line("ts", "spread", source=src, color="#17becf")
        self.z = _figure("z-score", x_range, height=220)
        self.z.line("ts", "z", source=src, color="#d62728")
        band = self.z.line("ts", "band", source=src, line_alpha=0.0)
        self.bands: dict[str, list[Span]] = {}
        for name, color, dash in (
            ("entry", "#555", "dashed"),
            ("exit", "#999", "dotted"),
            ("stop", "#d62728", "dashdot"),
        ):
            self.bands[name] = [
                Span(dimension="width", location=0.0, line_color=color, line_dash=dash)
                for _ in range(2)
            ]
            for s in self.bands[name]:
                self.z.add_layout(s)
        self.position = _figure("Position (+1 long spread, -1 short)", x_range, height=130)
        self.position.step("ts", "position", source=src, mode="after", color="#333")
        for fig in (self.prices, self.beta, self.spread, self.z, self.position):
            fig.add_tools(
                HoverTool(
                    renderers=[r for r in fig.renderers if r is not band],
                    tooltips=[
                        ("time", "@ts{%F %T}"),
                        ("y", "@close_y{0.0000}"),
                        ("x", "@close_x{0.0000}"),
                        ("beta", "@beta{0.0000}"),
                        ("spread", "@spread{0.000000}"),
                        ("z", "@z{0.00}"),
                        ("position", "@position"),
                    ],
                    formatters={"@ts": "datetime"},
                    mode="vline",
                )
            )
            if fig.legend:
                fig.legend.location = "top_left"
                fig.legend.click_policy = "hide"
        self._panes = [
            pn.Column(pn.pane.Bokeh(f), css_classes=[f"ps-chart-{n}"], sizing_mode="stretch_width")
            for f, n in (
                (self.prices, "prices"),
                (self.beta, "beta"),
                (self.spread, "spread"),
                (self.z, "z"),
                (self.position, "position"),
            )
        ]
        self.layout = pn.Column(
            *self._panes, sizing_mode="stretch_width", css_classes=["ps-charts"]
        )

    def set_bands(self, entry: float, exit_: float, stop: float | None) -> None:
        self._band = 1.1 * entry
        for name, level in (("entry", entry), ("exit", exit_), ("stop", stop)):
            lo, hi = self.bands[name]
            visible = level is not None
            lo.location, hi.location = (-level, level) if visible else (0.0, 0.0)
            lo.visible = hi.visible = visible

    def show(self, frame: PairFrame, key: tuple, stream: bool) -> None:
        """Show ``frame``; rows newer than the last shown are streamed when ``stream`` and the
        selection ``key`` is unchanged, else the data is replaced (bounded to MAX_POINTS)."""
        frame = frame.tail(MAX_POINTS)
        ts = frame.cols["ts"]
        if stream and key == self._key and len(frame):
            new = ts > self._last_ts
            if new.any():
                data = _source_data(frame, self._band)
                self.source.stream({k: v[new] for k, v in data.items()}, rollover=MAX_POINTS)
        else:
            self.source.data = _source_data(frame, self._band)
            self._key = key
            self.prices.title.text = f"Prices: {frame.pair} (y left, x right)"
        if len(frame):
            self._last_ts = float(ts[-1])
            cx = frame.cols["close_x"]
            finite = cx[np.isfinite(cx)]
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                pad = (hi - lo) * 0.05 or abs(hi) * 1e-4 or 1.0
                self.prices.extra_y_ranges["x"].update(start=lo - pad, end=hi + pad)
        else:
            self._last_ts = -math.inf

    def __panel__(self):
        return self.layout
