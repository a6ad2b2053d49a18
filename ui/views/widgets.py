"""The widgets and figures the views build alike: one place for their common settings."""

from __future__ import annotations

import pandas as pd
import panel as pn
from bokeh.plotting import figure

#: tools of the live time-series charts
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"


def action_button(name: str, css: str, width: int = 300, **extra) -> pn.widgets.Button:
    """A primary button; ``css`` is the class the browser tests find it by."""
    return pn.widgets.Button(
        name=name, button_type="primary", css_classes=[css], width=width, **extra
    )


def read_only_table(
    css: str, height: int, frame: pd.DataFrame | None = None, **extra
) -> pn.widgets.Tabulator:
    """A read-only Tabulator without index, columns fitted and stretched to the width."""
    return pn.widgets.Tabulator(
        pd.DataFrame() if frame is None else frame,
        css_classes=[css],
        disabled=True,
        show_index=False,
        layout="fit_data_stretch",
        height=height,
        sizing_mode="stretch_width",
        **extra,
    )


def time_figure(title: str, height: int, tools: str = TOOLS, **extra) -> figure:
    """A width-stretched figure with a datetime x axis (ms) and no Bokeh logo."""
    fig = figure(
        title=title,
        height=height,
        sizing_mode="stretch_width",
        x_axis_type="datetime",
        tools=tools,
        **extra,
    )
    fig.toolbar.logo = None
    return fig
