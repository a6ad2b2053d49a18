"""Feed status: a banner that says plainly whether the numbers are live, and the counters."""

from __future__ import annotations

import html

import panel as pn
from panel.viewable import Viewer

from ui.bridge import Cache, Health

_ALERT_TYPE = {
    "live": "success",
    "feed-down": "danger",
    "feed-unhealthy": "danger",
    "stale": "warning",
    "unreachable": "danger",
}
_CSS = """
.ps-stats { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 13px; }
.ps-stat { display: flex; flex-direction: column; }
.ps-stat-label { color: #666; font-size: 11px; text-transform: uppercase; }
.ps-stat-value { font-weight: 600; }
"""


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class StatusView(Viewer):
    """Banner (``ps-feed-banner``, ``data-state`` in its class) and counters (``ps-status``)."""

    def __init__(self, **params):
        super().__init__(**params)
        self.banner = pn.pane.Alert(
            "Connecting to the engine…",
            alert_type="secondary",
            css_classes=["ps-feed-banner", "ps-state-unreachable"],
            sizing_mode="stretch_width",
        )
        self.table = pn.pane.HTML(
            "", css_classes=["ps-status"], sizing_mode="stretch_width", stylesheets=[_CSS]
        )

    def show(self, cache: Cache, health: Health) -> None:
        self.banner.object = health.message
        self.banner.alert_type = _ALERT_TYPE[health.state]
        self.banner.css_classes = ["ps-feed-banner", f"ps-state-{health.state}"]
        st = cache.status
        feeds = st.get("feeds", [])
        lat = st.get("latency_ms", {})
        rejected: dict[str, int] = {}
        for f in feeds:
            for reason, n in f.get("rejected", {}).items():
                rejected[reason] = rejected.get(reason, 0) + int(n)
        cells = [
            ("feeds connected", f"{sum(bool(f.get('connected')) for f in feeds)}/{len(feeds)}"),
            ("feeds healthy", f"{sum(bool(f.get('healthy')) for f in feeds)}/{len(feeds)}"),
            ("trades/s", _fmt(sum(float(f.get("ticks_per_s", 0.0)) for f in feeds))),
            ("trades", _fmt(sum(int(f.get("ticks", 0)) for f in feeds))),
            ("rejected", ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) or "0"),
            ("gaps backfilled", _fmt(sum(int(f.get("gaps_backfilled", 0)) for f in feeds))),
            ("late ticks", _fmt(sum(int(f.get("late_ticks", 0)) for f in feeds))),
            ("reconnects", _fmt(sum(int(f.get("reconnects", 0)) for f in feeds))),
            ("latency p50/p99/max ms", "/".join(_fmt(lat.get(k)) for k in ("p50", "p99", "max"))),
        ]
        body = "".join(
            f"<div class='ps-stat'><span class='ps-stat-label'>{html.escape(k)}</span>"
            f"<span class='ps-stat-value'>{html.escape(v)}</span></div>"
            for k, v in cells
        )
        self.table.object = f"<div class='ps-stats'>{body}</div>"

    def __panel__(self):
        return pn.Column(self.banner, self.table, sizing_mode="stretch_width")
