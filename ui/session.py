"""Per-session parameters: what this user looks at (pair, timeframe, hedge, z window, filter).

A plain ``param.Parameterized`` store; views watch it, nothing here computes.
"""

from __future__ import annotations

import param

from engine.schemas import TIMEFRAME_MS

HEDGES = ("kalman", "rolling_ols", "static_ols")


class Settings(param.Parameterized):
    """One session's choices; ``source`` is "live" or "upload"."""

    pair = param.String(default="")
    timeframe = param.Selector(default="1s", objects=list(TIMEFRAME_MS))
    hedge = param.Selector(default="kalman", objects=list(HEDGES))
    zscore_window = param.Integer(default=60, bounds=(2, 3_600))
    min_quote_volume = param.Number(default=0.0, bounds=(0.0, None))
    source = param.Selector(default="live", objects=["live", "upload"])

    @property
    def legs(self) -> tuple[str, str]:
        y, x = self.pair.split("/")
        return y, x
