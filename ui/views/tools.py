"""The tool tabs beside the live charts."""

from __future__ import annotations

from ui.views.alerts import AlertsView
from ui.views.analysis import BacktestView, TestsView
from ui.views.data_io import DataView
from ui.views.screen import ScreenView


class Tools:
    """Tabs for tests, backtest, screening, alerts and data of one App."""

    def __init__(self, app: object):
        self.app = app
        self.views = [
            TestsView(app),
            BacktestView(app),
            ScreenView(app),
            AlertsView(app),
            DataView(app),
        ]

    def on_cache(self, cache: object) -> None:
        for v in self.views:
            v.on_cache(cache)

    def tabs(self) -> list[tuple[str, object]]:
        return [(v.title, v) for v in self.views]
