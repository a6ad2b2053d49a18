"""The History chart: a ``engine.history.PairHistory`` as one HoloViews Layout.

Panels, top to bottom: the close of each leg, the hedge ratio (beta), the spread, its z with the
strategy's entry/exit (and stop) bands, the position held and the equity (USDT). Every panel
shares one x dimension (``time``, UTC), so the Layout links their x ranges: zooming or panning
one moves all. Each line is downsampled on the server with HoloViews' ``downsample1d`` (LTTB,
to about ``width`` points): dynamic (the default), it re-aggregates the visible range after
every zoom or pan, so a browser never receives more than a few thousand points per line
whatever the range; static (``dynamic=False``, the HTML export), once over the whole range.
The dashboard's History tab and ``ui.research.Research.history_plot`` both draw this.
"""

from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # registers the Bokeh backend and its options
import numpy as np
from holoviews.operation.downsample import downsample1d

from engine.history import PairHistory

#: the downsampling of every line (numpy LTTB, no extra dependency)
ALGORITHM = "lttb"
#: points per line after downsampling (about the plot's pixel width)
WIDTH = 1000
#: the panels: (field, label, height px, colour)
PANELS = (
    ("beta", "hedge ratio (beta)", 150, "#9467bd"),
    ("spread", "spread", 150, "#8c564b"),
    ("z", "z-score", 180, "#d62728"),
    ("position", "position", 110, "#7f7f7f"),
    ("equity", "equity (USDT)", 170, "#2ca02c"),
)
TIME = hv.Dimension("time", label="time (UTC)")
TOOLS = ["hover", "save", "xpan", "xwheel_zoom", "box_zoom", "reset"]


def _line(
    ts: np.ndarray,
    values: np.ndarray,
    name: str,
    label: str,
    color: str,
    height: int,
    width: int,
    dynamic: bool,
):
    curve = hv.Curve((ts, values), TIME, hv.Dimension(name, label=label), label=label)
    down = downsample1d(curve, algorithm=ALGORITHM, width=width, dynamic=dynamic)
    return down.opts(
        color=color,
        height=height,
        width=width,
        tools=TOOLS,
        default_tools=[],
        active_tools=["xwheel_zoom"],
        show_legend=False,
        line_width=1.2,
    )


def _bands(entry: float, exit_: float, stop: float | None) -> list:
    """Dashed lines at +-entry (black), +-exit (grey) and dotted ones at +-stop (z units)."""
    levels = {entry: ("#000000", "dashed"), -entry: ("#000000", "dashed")}
    levels.update({exit_: ("#7f7f7f", "dashed"), -exit_: ("#7f7f7f", "dashed")})
    if stop is not None:
        levels.update({stop: ("#000000", "dotted"), -stop: ("#000000", "dotted")})
    return [
        hv.HLine(v).opts(color=c, line_dash=dash, line_width=1.5) for v, (c, dash) in levels.items()
    ]


def history_layout(
    h: PairHistory,
    *,
    entry: float,
    exit: float,
    stop: float | None = None,
    width: int = WIDTH,
    dynamic: bool = True,
) -> hv.Layout:
    """``h`` as a one-column Layout with linked x ranges (see the module docstring); the z
    panel carries dashed lines at +-entry, +-exit and +-stop (z units)."""
    ts = h.ts.astype("datetime64[ms]")
    y, x = h.pair.split("/")
    panels = [
        _line(ts, h.close_y, "close_y", f"{y} close", "#1f77b4", 170, width, dynamic),
        _line(ts, h.close_x, "close_x", f"{x} close", "#ff7f0e", 170, width, dynamic),
    ]
    for name, label, height, color in PANELS:
        values = getattr(h, name).astype(np.float64)
        line = _line(ts, values, name, label, color, height, width, dynamic)
        if name == "z":
            for band in _bands(entry, exit, stop):
                line = line * band
        panels.append(line)
    for i, panel in enumerate(panels[:-1]):  # one time axis, under the last panel
        panels[i] = panel.opts(xaxis=None)
    title = f"{h.pair} · {h.timeframe} · {h.n:,} bars"
    return hv.Layout(panels).cols(1).opts(shared_axes=True, title=title)
