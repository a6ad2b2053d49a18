"""Correlation heatmap of log returns across symbols and the screening table of pairs: the
CLI's screen (``engine.screen``) over the liquid symbols' stored and live bars."""

from __future__ import annotations

import html

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource, LinearColorMapper
from bokeh.palettes import RdBu11
from bokeh.plotting import figure
from panel.viewable import Viewer

from engine.errors import PairstackError
from engine.schemas import timeframe_ms
from ui import services
from ui.views.widgets import action_button, read_only_table


class ScreenView(Viewer):
    """Button ``ps-run-screen``; heatmap (source ``ps-corr-source``), table ``ps-screen-table``
    and ``ps-open-pair`` which opens the selected row's pair."""

    title = "Screen"

    def __init__(self, app: object, **params):
        super().__init__(**params)
        self.app = app
        self.button = action_button("Correlate and screen liquid symbols", "ps-run-screen")
        self.message = pn.pane.HTML("", css_classes=["ps-screen-message"])
        self.source = ColumnDataSource(
            {"a": [], "b": [], "corr": [], "label": []}, name="ps-corr-source"
        )
        self.fig = figure(
            title="Correlation of log returns",
            height=420,
            width=460,
            x_range=[],
            y_range=[],
            tools="hover,save",
            tooltips=[("pair", "@a / @b"), ("corr", "@corr{0.000}")],
        )
        self.fig.toolbar.logo = None
        mapper = LinearColorMapper(palette=list(reversed(RdBu11)), low=-1.0, high=1.0)
        self.fig.rect(
            "a",
            "b",
            1,
            1,
            source=self.source,
            fill_color={"field": "corr", "transform": mapper},
            line_color="white",
        )
        self.fig.text(
            "a",
            "b",
            text="label",
            source=self.source,
            text_align="center",
            text_baseline="middle",
            text_font_size="9pt",
        )
        self.fig.xaxis.major_label_orientation = 0.8
        self.table = read_only_table("ps-screen-table", 420, selectable=1)
        self.open = pn.widgets.Button(
            name="Open selected pair", css_classes=["ps-open-pair"], width=200
        )
        self.button.on_click(lambda _: self.run())
        self.open.on_click(lambda _: self.open_selected())

    def _liquid_bars(self) -> dict[str, np.ndarray]:
        app = self.app
        cache = app.state.bridge.cache
        tf_ms = timeframe_ms(app.state.config.analytics.timeframe)
        minimum = app.settings.min_quote_volume
        return {
            s: b for s, b in cache.universe.items() if services.quote_volume_1m(b, tf_ms) >= minimum
        }

    def run(self) -> None:
        app = self.app
        bars = self._liquid_bars()
        try:
            outcome = services.screen(
                bars,
                app.state.live_params.price,
                app.state.config.analytics.timeframe,
                store=app.state.config.store.path,
                min_bars=30,
            )
            names, corr = services.correlation(outcome.bars)
        except PairstackError as exc:
            self.message.object = f"<p class='ps-error'>{html.escape(str(exc))}</p>"
            return
        table = outcome.table
        a, b = np.meshgrid(names, names, indexing="ij")
        with pn.io.unlocked():  # a button click: raw Bokeh models change only in unlocked()
            self.fig.x_range.factors = list(names)
            self.fig.y_range.factors = list(names)
            self.source.data = {
                "a": a.ravel().tolist(),
                "b": b.ravel().tolist(),
                "corr": corr.ravel(),
                "label": [f"{v:.2f}" for v in corr.ravel()],
            }
        self.table.value = table
        left_out = "".join(
            f"<li>{html.escape(s)}: {html.escape(r)}</li>" for s, r in outcome.excluded.items()
        )
        self.message.object = (
            f"<p class='ps-screen-summary'>{len(names)} liquid symbols, {len(table)} pairs, "
            f"{table['bars'].max() if len(table) else 0} bars each</p>"
            + (
                f"<p>Left out:</p><ul class='ps-screen-excluded'>{left_out}</ul>"
                if left_out
                else ""
            )
        )

    def open_selected(self) -> None:
        sel = self.table.selection
        if not sel:
            self.message.object = "<p class='ps-error'>Select a row of the table first.</p>"
            return
        self.app.open_pair(str(self.table.value.iloc[sel[0]]["pair"]))

    def on_cache(self, cache: object) -> None:
        """The screen runs on demand only."""

    def __panel__(self):
        return pn.Column(
            pn.Row(self.button, self.open),
            self.message,
            pn.Row(pn.pane.Bokeh(self.fig, css_classes=["ps-heatmap"]), self.table),
            sizing_mode="stretch_width",
        )
