"""The App shell of one session: controls, status, live charts and the tool tabs.

Every 500 ms (a periodic callback of the session) the App tells the bridge which pair and bars it
looks at (``watch``, ``want``) and reads the bridge's cache; when it has changed it picks the
frame to show (the live snapshot when the session's pair steps live and its settings equal the
live config, else the engine's pair step recomputed over the recent bars of the chosen
timeframe, or the uploaded bars) and hands it to the views. A recomputed frame is kept until
its inputs change (the legs' bars: count, first and last bar; the settings), so a poll that
brought nothing new for it costs nothing. The session never calls Ray: what it asks of the
engine goes through the bridge (``ui.bridge.Job``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import panel as pn

from engine.errors import PairstackError
from engine.schemas import timeframe_ms
from ui import services
from ui.access import session_refusal
from ui.bridge import health
from ui.server import CACHE_KEY, ServerState
from ui.services import PairFrame
from ui.session import HEDGES, Settings
from ui.views.charts import PairCharts
from ui.views.history import HistoryView
from ui.views.status import StatusView
from ui.views.tools import Tools

log = logging.getLogger(__name__)

UPDATE_MS = 500


class App:
    """One browser session."""

    def __init__(self, state: ServerState):
        self.state = state
        cfg = state.config
        live = state.live_params
        self.settings = Settings(
            pair=cfg.pair_names[0],
            timeframe=cfg.analytics.timeframe,
            hedge=live.hedge,
            zscore_window=live.zscore_window,
        )
        self.upload_bars: dict[str, np.ndarray] = {}
        self.frame: PairFrame = services.empty_frame(self.settings.pair, self.settings.timeframe)
        self._seen_seq = -1
        self._dirty = True
        self._recomputed: tuple[tuple, PairFrame] | None = None  # (inputs, frame)
        state.bridge.watch(self.settings.pair)
        self.status = StatusView()
        self.charts = PairCharts()
        strat = cfg.strategy
        self.charts.set_bands(strat.entry, strat.exit, getattr(strat, "stop", None))
        self.pair_select = pn.widgets.Select(
            name="Pair",
            options=list(cfg.pair_names),
            value=self.settings.pair,
            css_classes=["ps-pair-select"],
            width=200,
        )
        self.min_volume = pn.widgets.FloatInput(
            name="Min 1-min quote volume (USDT)",
            value=0.0,
            start=0.0,
            step=1000.0,
            css_classes=["ps-min-volume"],
            width=200,
        )
        self.timeframe = pn.widgets.RadioButtonGroup(
            name="Timeframe",
            options=list(cfg.timeframes),
            value=self.settings.timeframe,
            css_classes=["ps-timeframe"],
            button_type="default",
        )
        self.hedge = pn.widgets.RadioButtonGroup(
            name="Hedge",
            options={"Kalman": "kalman", "Rolling OLS": "rolling_ols", "Static OLS": "static_ols"},
            value=self.settings.hedge,
            css_classes=["ps-hedge"],
            button_type="default",
        )
        self.zwin = pn.widgets.IntInput(
            name="z window (bars)",
            value=self.settings.zscore_window,
            start=2,
            end=3600,
            css_classes=["ps-zwindow"],
            width=130,
        )
        self.kpis = pn.pane.HTML("", css_classes=["ps-kpis"], sizing_mode="stretch_width")
        self.info = pn.pane.HTML("", css_classes=["ps-chart-info"], sizing_mode="stretch_width")
        self.tools = Tools(self)
        self.history = HistoryView(self)
        self.tabs: pn.Tabs | None = None
        self.pair_select.param.watch(lambda e: self._set(pair=e.new), "value")
        self.timeframe.param.watch(lambda e: self._set(timeframe=e.new), "value")
        self.hedge.param.watch(lambda e: self._set(hedge=e.new), "value")
        self.zwin.param.watch(lambda e: self._set(zscore_window=int(e.new)), "value")
        self.min_volume.param.watch(lambda e: self._set(min_quote_volume=float(e.new)), "value")

    # -- settings -----------------------------------------------------------------------------
    def _set(self, **changes) -> None:
        self.settings.param.update(**changes)
        self._dirty = True
        self.update()

    def open_pair(self, pair: str) -> None:
        """Show ``pair`` (any two symbols), live: from the screen or the alerts."""
        options = list(self.pair_select.options)
        if pair not in options:
            self.pair_select.options = [*options, pair]
        self.settings.source = "live"
        self.pair_select.value = pair
        self._set(pair=pair, source="live")
        if self.tabs is not None:
            self.tabs.active = 0  # the Live tab

    def show_upload(self, bars: dict[str, np.ndarray], pair: str) -> None:
        self.upload_bars = bars
        self._recomputed = None  # new bars, whatever they look like
        self._set(pair=pair, source="upload")

    def back_to_live(self) -> None:
        self.upload_bars = {}
        self._set(pair=self.pair_select.value, source="live")

    def params(self):
        s = self.settings
        return services.params_for(self.state.live_params, s.hedge, s.zscore_window)

    def live_pairs(self) -> list[str]:
        """The pairs the engine steps: the config's, then those added at run time."""
        cfg = list(self.state.config.pair_names)
        return cfg + [p for p in self.state.bridge.cache.pairs if p not in cfg]

    def is_live_view(self) -> bool:
        s, cfg, live = self.settings, self.state.config, self.state.live_params
        return (
            s.source == "live"
            and s.pair in self.live_pairs()
            and s.timeframe == cfg.analytics.timeframe
            and s.hedge == live.hedge
            and s.zscore_window == live.zscore_window
        )

    def leg_bars(self, timeframe: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Both legs' bars behind the current view (uploaded, or the bridge's recent bars; None
        until the bridge has them, or when a leg is a symbol no feed carries)."""
        y, x = self.settings.legs
        if self.settings.source == "upload":
            return self.upload_bars[y], self.upload_bars[x]
        tf = timeframe or self.settings.timeframe
        bridge = self.state.bridge
        if y not in bridge.symbols or x not in bridge.symbols:
            return None
        bridge.want(y, tf)
        bridge.want(x, tf)
        bars = bridge.cache.bars
        if (y, tf) not in bars or (x, tf) not in bars:
            return None
        return bars[(y, tf)], bars[(x, tf)]

    # -- the update loop ----------------------------------------------------------------------
    def current_frame(self) -> tuple[PairFrame, str]:
        s = self.settings
        if self.is_live_view():
            snap = self.state.bridge.cache.snapshots.get(s.pair)
            if snap is None:
                return services.empty_frame(s.pair, s.timeframe), "waiting for the engine"
            frame = services.from_snapshot(s.pair, s.timeframe, snap, self.state.live_params.hedge)
            return frame, "live engine state"
        unfed = [leg for leg in s.legs if leg not in self.state.bridge.symbols]
        if s.source == "live" and unfed:
            why = f"no live feed for {', '.join(unfed)}: the engine streams only its symbols"
            return services.empty_frame(s.pair, s.timeframe), why
        legs = self.leg_bars()
        if legs is None:
            return services.empty_frame(s.pair, s.timeframe), "loading recent bars…"
        origin = "uploaded bars" if s.source == "upload" else "recomputed over recent bars"
        inputs = (s.pair, s.timeframe, s.hedge, s.zscore_window, s.source,
                  *(_bars_key(b) for b in legs))  # fmt: skip
        if self._recomputed is None or self._recomputed[0] != inputs:
            cfg = self.state.config
            frame = services.recompute(
                s.pair, s.timeframe, legs[0], legs[1], self.params(), cfg.strategy,
                cfg.analytics.max_carry,
            )  # fmt: skip
            self._recomputed = (inputs, frame)
        return self._recomputed[1], origin

    def update(self) -> None:
        cache = self.state.bridge.cache
        if cache.seq == self._seen_seq and not self._dirty:
            return
        self._seen_seq = cache.seq
        s = self.settings
        if s.source == "live":
            self.state.bridge.watch(s.pair)  # keep the bridge fetching this pair's snapshot
            self.leg_bars()  # and its legs' bars (backtest, recompute)
        tf_ms = timeframe_ms(self.state.config.analytics.timeframe)
        h = health(cache, time.time(), tf_ms)
        self.status.show(cache, h)
        self.tools.on_cache(cache)
        self._filter_pairs(cache)
        if s.source == "upload" and not self._dirty:
            return
        try:
            frame, origin = self.current_frame()
        except PairstackError as exc:
            frame, origin = services.empty_frame(s.pair, s.timeframe), f"cannot compute: {exc}"
        self.frame = frame
        key = (s.pair, s.timeframe, s.hedge, s.zscore_window, s.source)
        self.charts.show(frame, key, stream=self.is_live_view() and not self._dirty)
        self._dirty = False
        live_now = s.source == "upload" or h.live
        self._show_kpis(frame, origin, live_now)

    def _filter_pairs(self, cache) -> None:
        minimum = self.settings.min_quote_volume
        tf_ms = timeframe_ms(self.state.config.analytics.timeframe)
        vols = {s: services.quote_volume_1m(b, tf_ms) for s, b in cache.universe.items()}
        live = self.live_pairs()
        allowed = services.liquid_pairs(live, vols, minimum)
        extra = [p for p in self.pair_select.options if p not in live]
        options = allowed + [p for p in extra if p not in allowed]
        if self.settings.source == "live" and self.settings.pair not in options:
            options.append(self.settings.pair)
        if options != list(self.pair_select.options):
            self.pair_select.options = options

    def _show_kpis(self, frame: PairFrame, origin: str, live_now: bool) -> None:
        s = self.settings
        cls = "ps-live" if live_now else "ps-stale"
        label = "" if live_now else " <b class='ps-stale-label'>(NOT live)</b>"
        vals = [
            ("z", frame.last("z"), "ps-kpi-z", "{:.3f}"),
            ("beta", frame.last("beta"), "ps-kpi-beta", "{:.4f}"),
            ("spread", frame.last("spread"), "ps-kpi-spread", "{:.6f}"),
            ("position", frame.last("position"), "ps-kpi-position", "{:+.0f}"),
        ]
        cells = "".join(
            f"<span class='ps-kpi'>{n} <b class='{c}'>"
            f"{'–' if not np.isfinite(v) else f.format(v)}</b></span> "
            for n, v, c, f in vals
        )
        last_ts = frame.cols["ts"][-1] if len(frame) else None
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(last_ts / 1000)) + " UTC"
            if last_ts is not None
            else "–"
        )
        self.kpis.object = f"<div class='{cls}'>{cells}{label}</div>"
        if not live_now:
            origin = f"{origin}, NOT live"
        if len(frame) and not np.isfinite(frame.cols["z"]).any():
            origin = f"{origin} · warming up: too few bars yet for the hedge and z windows"
        hedge = dict(zip(HEDGES, ("Kalman", "rolling OLS", "static OLS"), strict=True))[s.hedge]
        self.info.object = (
            f"<span class='ps-info' data-bars='{len(frame)}'>{s.pair} · {s.timeframe} · "
            f"{hedge} · z window {s.zscore_window} · {len(frame)} bars · last bar {when} · "
            f"{origin}</span>"
        )

    # -- layout -------------------------------------------------------------------------------
    def view(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            self.pair_select,
            self.min_volume,
            pn.Column(pn.pane.Markdown("**Timeframe**", margin=(0, 5)), self.timeframe),
            pn.Column(pn.pane.Markdown("**Hedge**", margin=(0, 5)), self.hedge),
            self.zwin,
            css_classes=["ps-controls"],
            sizing_mode="stretch_width",
        )
        live = pn.Column(self.kpis, self.info, self.charts, sizing_mode="stretch_width")
        self.tabs = tabs = pn.Tabs(
            ("Live", live),
            *self.tools.tabs(),
            (HistoryView.title, self.history),
            css_classes=["ps-tabs"],
            sizing_mode="stretch_width",
            dynamic=False,
        )
        page = pn.Column(
            pn.pane.HTML("<h2 class='ps-title'>pairstack</h2>", margin=(0, 10)),
            self.status,
            controls,
            tabs,
            sizing_mode="stretch_width",
            css_classes=["ps-app"],
        )
        pn.state.add_periodic_callback(self._tick, period=UPDATE_MS)
        pn.state.onload(self.update)
        return page

    def _tick(self) -> None:
        try:
            self.update()
        except Exception:  # a bad tick must not kill the session's callback; it is logged
            log.exception("dashboard update failed")


def _bars_key(bars: np.ndarray) -> tuple:
    """What identifies a leg's bars for the recompute memo: count, first and last bar (ts ms
    and close; a corrected last bar changes its close)."""
    if not bars.size:
        return (0,)
    return (bars.size, int(bars["ts"][0]), int(bars["ts"][-1]), float(bars["close"][-1]))


def build() -> pn.viewable.Viewable:
    """The page of a new session (only an explanation for a client it may not serve)."""
    why = session_refusal()
    if why is not None:
        log.warning("dashboard: session refused: %s", why)
        return pn.pane.Alert(why, alert_type="danger", css_classes=["ps-refused"])
    state = pn.state.cache.get(CACHE_KEY)
    if state is None:
        return pn.pane.Alert(
            "The pairstack engine is not connected: serve the dashboard with `panel serve ui/` "
            "so that ui/app_hooks.py runs.",
            alert_type="danger",
            css_classes=["ps-feed-banner"],
        )
    return App(state).view()
