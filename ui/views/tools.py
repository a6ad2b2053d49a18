"""The tool tabs beside the live charts."""

from __future__ import annotations


class Tools:
    """Tabs for analysis, backtest, screening, alerts and data of one App."""

    def __init__(self, app: object):
        self.app = app
        self.views: list = []

    def on_cache(self, cache: object) -> None:
        for v in self.views:
            v.on_cache(cache)

    def tabs(self) -> list[tuple[str, object]]:
        return [(v.title, v) for v in self.views]
