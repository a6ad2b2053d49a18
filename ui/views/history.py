"""The History tab: a pair over any stored range, computed in a Ray actor, drawn with HoloViews.

Pick a configured pair (``ps-history-pair``) or any two stored symbols (``ps-history-y``,
``ps-history-x``), a timeframe the store holds (``ps-history-timeframe``) and a range
(``ps-history-start``/``ps-history-end``, ISO-8601 UTC, empty: all the store holds), then
``ps-history-show``. The request goes to the server's ``ui.history_jobs.HistoryJobs`` (the
session never calls Ray); a periodic callback of this view polls the Job and, once done, shows
``ui.history_plot.history_layout`` (server-side downsampling, linked x range) in
``ps-history-plot``, a summary in ``ps-history-message`` and the backtest's stats in
``ps-history-stats``. ``ps-history-export`` downloads the chart as a standalone HTML file.
"""

from __future__ import annotations

import html
import io
import math
import re

import holoviews as hv
import numpy as np
import panel as pn
from bokeh.embed import file_html
from bokeh.resources import INLINE
from panel.viewable import Viewer

from engine.history import PairHistory
from ui.history_jobs import Job, history_jobs
from ui.history_plot import history_layout

#: ms between two looks at a pending Job
POLL_MS = 250


#: a <script src=...> or <link href=...> tag: files other libraries' models declare (Panel's
#: widgets, served by its server or a CDN); a saved Bokeh chart needs none of them
_EXTERNAL_TAG = re.compile(r'<(?:script|link)\b[^>]*\b(?:src|href)="[^"]*"[^>]*>(?:</script>)?\s*')


def _iso(ms: int) -> str:
    """A bar time (ms) as "YYYY-MM-DD HH:MM:SS" (UTC)."""
    return str(np.datetime64(int(ms), "ms").astype("datetime64[s]")).replace("T", " ")


class HistoryView(Viewer):
    """One session's History tab (``app``: the App, for the config and live parameters)."""

    title = "History"

    def __init__(self, app: object, **params):
        super().__init__(**params)
        self.app = app
        cfg = app.state.config
        self.jobs = history_jobs(str(cfg.store.path), cfg.analytics.max_carry)
        self.catalog: dict[str, list[str]] = {}
        self.result: PairHistory | None = None
        pairs = list(cfg.pair_names)
        y, x = pairs[0].split("/")
        self.pair = pn.widgets.Select(
            name="Configured pair",
            options=["", *pairs],
            value=pairs[0],
            width=200,
            css_classes=["ps-history-pair"],
        )
        self.y = pn.widgets.Select(
            name="Y (stored)", options=[y], value=y, width=160, css_classes=["ps-history-y"]
        )
        self.x = pn.widgets.Select(
            name="X (stored)", options=[x], value=x, width=160, css_classes=["ps-history-x"]
        )
        self.timeframe = pn.widgets.Select(
            name="Timeframe", options=[], width=100, css_classes=["ps-history-timeframe"]
        )
        self.start = pn.widgets.TextInput(
            name="Start (UTC)", placeholder="all", width=170, css_classes=["ps-history-start"]
        )
        self.end = pn.widgets.TextInput(
            name="End (UTC)", placeholder="all", width=170, css_classes=["ps-history-end"]
        )
        self.button = pn.widgets.Button(
            name="Show history", button_type="primary", width=140, css_classes=["ps-history-show"]
        )
        self.export = pn.widgets.FileDownload(
            callback=self._export_html,
            filename="history.html",
            label="Export HTML",
            button_type="default",
            width=140,
            css_classes=["ps-history-export"],
            disabled=True,
        )
        self.message = pn.pane.HTML(
            "<p>Loading the store's symbols…</p>", css_classes=["ps-history-message"]
        )
        self.stats = pn.pane.HTML("", css_classes=["ps-history-stats"])
        self.plot = pn.pane.HoloViews(
            None,
            css_classes=["ps-history-plot"],
            backend="bokeh",
            sizing_mode="fixed",
            linked_axes=True,
        )
        self.pair.param.watch(self._on_pair, "value")
        self.timeframe.param.watch(lambda e: self._fill_symbols(), "value")
        self.button.on_click(lambda _: self.show())
        self._job: Job | None = None
        self._then = None  # what to do with self._job once it is done
        self._poll: pn.io.PeriodicCallback | None = None
        self._await(self.jobs.submit("catalog"), self._on_catalog)

    # -- jobs ---------------------------------------------------------------------------------
    def _await(self, job: Job, then) -> None:
        """Poll ``job`` every ``POLL_MS`` and call ``then(job)`` once it is done."""
        self._job, self._then = job, then
        if self._poll is None:
            self._poll = pn.state.add_periodic_callback(self._check, period=POLL_MS)

    def _check(self) -> None:
        job = self._job
        if job is None or not job.done:
            return
        self._job = None
        if self._poll is not None:
            self._poll.stop()
            self._poll = None
        self._then(job)

    # -- the catalog and the pickers ------------------------------------------------------------
    def _on_catalog(self, job: Job) -> None:
        if job.error is not None:
            self.message.object = f"<p class='ps-error'>{html.escape(job.error)}</p>"
            return
        self.catalog = job.value
        if not self.catalog:
            self.message.object = "<p class='ps-error'>The store holds no bars yet.</p>"
            return
        legs = {self.y.value, self.x.value}
        held = [tf for tf, symbols in self.catalog.items() if legs <= set(symbols)]
        self.timeframe.options = list(self.catalog)
        self.timeframe.value = held[0] if held else next(iter(self.catalog))
        self._fill_symbols()
        self.message.object = "<p>Pick a pair, a timeframe and a range, then Show history.</p>"

    def _fill_symbols(self) -> None:
        symbols = self.catalog.get(self.timeframe.value, [])
        for w in (self.y, self.x):
            w.options = sorted({*symbols, w.value})

    def _on_pair(self, event) -> None:
        if not event.new:
            return
        y, x = event.new.split("/")
        for w, s in ((self.y, y), (self.x, x)):
            if s not in w.options:
                w.options = [*w.options, s]
            w.value = s

    # -- the history ----------------------------------------------------------------------------
    def show(self) -> None:
        """Ask the ResearchActor for the chosen pair over the chosen range."""
        y, x, tf = self.y.value, self.x.value, self.timeframe.value
        if not tf or y == x:
            self.message.object = (
                "<p class='ps-error'>Pick a timeframe the store holds and two different "
                f"symbols (got {html.escape(str(y))}/{html.escape(str(x))}).</p>"
            )
            return
        app = self.app
        job = self.jobs.submit(
            "history",
            f"{y}/{x}",
            tf,
            app.state.live_params,
            app.state.config.strategy,
            self.start.value.strip() or None,
            self.end.value.strip() or None,
        )
        self.message.object = f"<p>Computing {html.escape(y)}/{html.escape(x)} · {tf}…</p>"
        self._await(job, self._on_history)

    def _on_history(self, job: Job) -> None:
        if job.error is not None:
            self.message.object = (
                f"<p class='ps-error'>Cannot show this history: {html.escape(job.error)}</p>"
            )
            return
        h: PairHistory = job.value
        self.result = h
        self.plot.object = self._layout(h, dynamic=True)
        self.export.disabled = False
        st = h.stats
        ret = st.get("total_return", math.nan)
        self.message.object = (
            f"<p class='ps-history-summary' data-bars='{h.n}'>{html.escape(h.pair)} · "
            f"{h.timeframe} · {h.n:,} bars · {_iso(h.ts[0])} to {_iso(h.ts[-1])} UTC · "
            f"{st.get('trades', 0)} trades · total return "
            f"{'–' if not math.isfinite(ret) else f'{ret:.4%}'}</p>"
        )
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td class='ps-num'>{html.escape(_fmt(v))}</td></tr>"
            for k, v in st.items()
        )
        self.stats.object = f"<table>{rows}</table>"

    def _layout(self, h: PairHistory, dynamic: bool) -> hv.Layout:
        s = self.app.state.config.strategy
        return history_layout(h, entry=s.entry, exit=s.exit, stop=s.stop, dynamic=dynamic)

    def _export_html(self) -> io.BytesIO:
        """The chart as one standalone HTML file (Bokeh's resources inline, nothing loaded
        from outside; lines downsampled once over the whole range)."""
        buf = io.BytesIO()
        if self.result is not None:
            model = hv.render(self._layout(self.result, dynamic=False), backend="bokeh")
            title = f"pairstack history {self.result.pair}"
            page = file_html(model, INLINE, title)
            buf.write(_EXTERNAL_TAG.sub("", page).encode())
            self.export.filename = f"history-{self.result.pair.replace('/', '-')}.html"
        buf.seek(0)
        return buf

    def __panel__(self):
        controls = pn.Row(
            self.pair,
            self.y,
            self.x,
            self.timeframe,
            self.start,
            self.end,
            pn.Column(pn.Spacer(height=18), self.button),
            pn.Column(pn.Spacer(height=18), self.export),
        )
        return pn.Column(controls, self.message, self.plot, self.stats, sizing_mode="stretch_width")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)
