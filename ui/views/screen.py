"""The Screen tab: the store's newest saved screen (``pairstack screen``) or one run from here on
the engine (a ``ScreenJob`` actor, with progress), as a sortable table with header filters,
heatmaps of the Engle-Granger p-values and of the log-return correlations of its top symbols;
a row opens its pair in the live view or is added to the running engine ("watch live")."""

from __future__ import annotations

import html
import time

import holoviews as hv
import holoviews.plotting.bokeh  # the bokeh backend of the heatmaps
import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, LinearColorMapper, NumberFormatter
from bokeh.palettes import RdBu11
from bokeh.plotting import figure
from panel.viewable import Viewer

from actors.screen import screen_frame
from engine.schemas import timeframe_ms
from ui import services
from ui.views.widgets import action_button

#: symbols in the heatmaps (the first met going down the table, best p-value first)
HEATMAP_SYMBOLS = 12
#: rows per page of the table (paged on the server: a screen may have 100,000 rows)
PAGE_SIZE = 15
_TITLES = {
    "pair": "pair (Y/X)",
    "corr": "corr",
    "eg_pvalue": "p-value",
    "qvalue": "q-value",
    "half_life": "half-life (bars)",
    "beta": "beta",
    "bars": "bars",
}
_FILTERS = {
    "pair": {"type": "input", "func": "like", "placeholder": "symbol"},
    "corr": {"type": "number", "func": ">=", "placeholder": "≥"},
    "eg_pvalue": {"type": "number", "func": "<=", "placeholder": "≤"},
    "qvalue": {"type": "number", "func": "<=", "placeholder": "≤"},
    "half_life": {"type": "number", "func": "<=", "placeholder": "≤"},
    "beta": {"type": "number", "func": ">=", "placeholder": "≥"},
    "bars": {"type": "number", "func": ">=", "placeholder": "≥"},
}
_FORMATS = {
    "corr": NumberFormatter(format="0.000"),
    "eg_pvalue": NumberFormatter(format="0.00000"),
    "qvalue": NumberFormatter(format="0.00000"),
    "half_life": NumberFormatter(format="0.0"),
    "beta": NumberFormatter(format="0.0000"),
    "bars": NumberFormatter(format="0,0"),
}


def _when(ms: object) -> str:
    if ms is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(int(ms) / 1000.0)) + " UTC"


def _pvalue_map(grid: pd.DataFrame, symbols: list[str]) -> hv.HeatMap:
    return hv.HeatMap(grid, kdims=["a", "b"], vdims=["eg_pvalue"]).opts(
        title="Engle-Granger p-value (top symbols)",
        cmap="viridis",
        clim=(0.0, 1.0),
        colorbar=True,
        clabel="p-value",
        tools=["hover"],
        toolbar=None,
        width=480,
        height=440,
        xrotation=45,
        xlabel="",
        ylabel="",
        default_tools=[],
    ).redim.values(a=symbols, b=symbols)


class ScreenView(Viewer):
    """Buttons ``ps-run-screen``, ``ps-open-pair``, ``ps-watch-live``; what is shown in
    ``ps-screen-source``; table ``ps-screen-table``; heatmaps ``ps-pvalue-heatmap`` (HoloViews)
    and ``ps-heatmap`` (correlation, source ``ps-corr-source``)."""

    title = "Screen"

    def __init__(self, app: object, **params):
        super().__init__(**params)
        self.app = app
        self.button = action_button("Screen liquid symbols now", "ps-run-screen", width=240)
        self.open = pn.widgets.Button(
            name="Open selected pair", css_classes=["ps-open-pair"], width=180
        )
        self.watch = pn.widgets.Button(
            name="Watch selected pair live", css_classes=["ps-watch-live"], width=200
        )
        self.origin = pn.pane.HTML("", css_classes=["ps-screen-source"])
        self.message = pn.pane.HTML("", css_classes=["ps-screen-message"])
        self.progress = pn.pane.HTML("", css_classes=["ps-screen-progress"])
        self.table = pn.widgets.Tabulator(
            pd.DataFrame({c: pd.Series(dtype=object if c == "pair" else float) for c in _TITLES}),
            css_classes=["ps-screen-table"],
            disabled=True,
            show_index=False,
            selectable=1,
            header_filters=_FILTERS,
            titles=_TITLES,
            formatters=_FORMATS,
            pagination="remote",
            page_size=PAGE_SIZE,
            layout="fit_data_stretch",
            sizing_mode="stretch_width",
        )
        self.pvalues = pn.pane.HoloViews(
            None, backend="bokeh", css_classes=["ps-pvalue-heatmap"], width=500, height=460
        )
        self.source = ColumnDataSource(
            {"a": [], "b": [], "corr": [], "label": []}, name="ps-corr-source"
        )
        self.fig = figure(
            title="Correlation of log returns (top symbols)",
            height=440,
            width=460,
            x_range=[],
            y_range=[],
            tools="hover,save",
            tooltips=[("pair", "@a / @b"), ("corr", "@corr{0.000}")],
        )
        self.fig.toolbar.logo = None
        mapper = LinearColorMapper(palette=list(reversed(RdBu11)), low=-1.0, high=1.0)
        self.fig.rect("a", "b", 1, 1, source=self.source, line_color="white",
                      fill_color={"field": "corr", "transform": mapper})  # fmt: skip
        self.fig.text("a", "b", text="label", source=self.source, text_align="center",
                      text_baseline="middle", text_font_size="8pt")  # fmt: skip
        self.fig.xaxis.major_label_orientation = 0.8
        self.job = None  # the bridge Job of a screen run from here
        self.adding = None  # (bridge Job, pair) of "watch live"
        self._saved_seen: str | None = None  # file name of the newest saved screen shown
        self.button.on_click(lambda _: self.run())
        self.open.on_click(lambda _: self.open_selected())
        self.watch.on_click(lambda _: self.watch_selected())

    # -- what is shown ----------------------------------------------------------------------
    def show(self, table: pd.DataFrame, origin: str) -> None:
        self.table.value = table
        self.table.selection = []
        self.origin.object = origin
        symbols, pv = services.symbol_grid(table, "eg_pvalue", HEATMAP_SYMBOLS)
        _, corr = services.symbol_grid(table, "corr", HEATMAP_SYMBOLS, diagonal=1.0)
        self.pvalues.object = _pvalue_map(pv, symbols) if symbols else None
        with pn.io.unlocked():  # raw Bokeh models change only in unlocked() (a click or a tick)
            self.fig.x_range.factors = list(symbols)
            self.fig.y_range.factors = list(symbols)
            self.source.data = {
                "a": corr["a"].tolist(),
                "b": corr["b"].tolist(),
                "corr": corr["corr"].to_numpy(),
                "label": ["" if np.isnan(v) else f"{v:.2f}" for v in corr["corr"]],
            }

    def _show_saved(self, saved: object) -> None:
        p = saved.params
        table = screen_frame(saved.table)
        self.show(
            table,
            f"<p class='ps-screen-saved'>Saved screen <b>{html.escape(saved.name)}</b>: "
            f"{p.get('timeframe', '?')} bars {_when(p.get('first_bar'))} to "
            f"{_when(p.get('last_bar'))}, {len(p.get('symbols', []))} symbols, "
            f"{len(table)} pairs (run <code>pairstack screen</code> to save a newer one)</p>",
        )

    # -- a screen run from the tab ----------------------------------------------------------
    def _liquid_bars(self) -> dict[str, np.ndarray]:
        app = self.app
        cache = app.state.bridge.cache
        tf_ms = timeframe_ms(app.state.config.analytics.timeframe)
        minimum = app.settings.min_quote_volume
        return {
            s: b for s, b in cache.universe.items() if services.quote_volume_1m(b, tf_ms) >= minimum
        }

    def run(self) -> None:
        """Hand a screen of the liquid symbols to the bridge (a ScreenJob actor runs it)."""
        if self.job is not None:
            return  # one at a time: this one's outcome is shown first
        app = self.app
        self.job = app.state.bridge.screen(
            self._liquid_bars(),
            app.state.live_params.price,
            app.state.config.analytics.timeframe,
            store=app.state.config.store.path,
            min_bars=30,
            max_carry=app.state.config.analytics.max_carry,
        )
        self.progress.object = "<p>Screen queued on the engine…</p>"

    def _job_news(self) -> None:
        job = self.job
        if not job.finished:
            done, total = job.progress or (0, 0)
            what = f"{done} of {total} chunks of pairs" if total else "reading the bars"
            self.progress.object = f"<p>Screen running on the engine: {what}…</p>"
            return
        self.job = None
        self.progress.object = ""
        if job.state == "failed":
            self.message.object = f"<p class='ps-error'>{html.escape(job.error or '')}</p>"
            return
        out = job.result
        table = out.table
        self.show(
            table,
            "<p class='ps-screen-run'>Screen run now over the liquid symbols' recent bars "
            "(not saved)</p>",
        )
        left_out = "".join(
            f"<li>{html.escape(s)}: {html.escape(r)}</li>" for s, r in out.excluded.items()
        )
        self.message.object = (
            f"<p class='ps-screen-summary'>{len(out.params['symbols'])} liquid symbols, "
            f"{len(table)} pairs, {table['bars'].max() if len(table) else 0} bars each</p>"
            + (
                f"<p>Left out:</p><ul class='ps-screen-excluded'>{left_out}</ul>"
                if left_out
                else ""
            )
        )

    # -- rows -------------------------------------------------------------------------------
    def _selected(self) -> str | None:
        rows = self.table.selected_dataframe
        if not len(rows):
            self.message.object = "<p class='ps-error'>Select a row of the table first.</p>"
            return None
        return str(rows.iloc[0]["pair"])

    def open_selected(self) -> None:
        pair = self._selected()
        if pair is not None:
            self.app.open_pair(pair)

    def watch_selected(self) -> None:
        """Add the selected pair to the running engine (the Hub picks its PairActor)."""
        pair = self._selected()
        if pair is None or (self.adding is not None and not self.adding[0].finished):
            return
        if pair in self.app.state.bridge.cache.pairs:
            self.message.object = f"<p class='ps-ok'>{html.escape(pair)} is already live.</p>"
            self.app.open_pair(pair)
            return
        self.adding = (self.app.state.bridge.add_pairs([pair]), pair)
        self.message.object = (
            f"<p class='ps-watch-progress'>Adding {html.escape(pair)} to the engine "
            "(warming it up from the store)…</p>"
        )

    def _adding_news(self, cache: object) -> None:
        job, pair = self.adding
        if job.state == "failed":
            self.adding = None
            self.message.object = f"<p class='ps-error'>{html.escape(job.error or '')}</p>"
        elif job.finished and pair in cache.pairs:  # the bridge knows it: open it live
            self.adding = None
            self.message.object = f"<p class='ps-ok'>{html.escape(pair)} now steps live.</p>"
            self.app.open_pair(pair)

    def on_cache(self, cache: object) -> None:
        """A finished run or pair addition is shown; a newer saved screen replaces what is
        shown (a run from here stays until then)."""
        if self.job is not None:
            self._job_news()
        if self.adding is not None:
            self._adding_news(cache)
        saved = cache.screen
        if saved is not None and saved.name != self._saved_seen:
            self._saved_seen = saved.name
            self._show_saved(saved)

    def __panel__(self):
        return pn.Column(
            pn.Row(self.button, self.open, self.watch),
            self.origin,
            self.progress,
            self.message,
            pn.Row(self.table, sizing_mode="stretch_width"),
            pn.Row(self.pvalues, pn.pane.Bokeh(self.fig, css_classes=["ps-heatmap"])),
            sizing_mode="stretch_width",
        )
