"""The ``pairstack status --json`` object (docs/semantics.md "CLI") from feed stats, pair rows and
latency samples: plain data in, JSON-safe builtins out (NaN/inf become null, times ISO-8601 UTC).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np


def iso_ms(ts_ms: int | None) -> str | None:
    """Unix ms -> ISO-8601 UTC string with milliseconds (``2026-01-02T03:04:05.000Z``)."""
    if ts_ms is None:
        return None
    dt = datetime.fromtimestamp(ts_ms / 1000.0, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts_ms) % 1000:03d}Z"


def _num(value: float) -> float | None:
    """JSON-safe float: NaN/inf -> None."""
    value = float(value)
    return value if math.isfinite(value) else None


def latency_summary(samples_ms: np.ndarray) -> dict:
    """``{"p50", "p99", "max"}`` of latency samples in ms (None each when there are none)."""
    samples_ms = np.asarray(samples_ms, dtype=np.float64)
    if samples_ms.size == 0:
        return {"p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(samples_ms, [50.0, 99.0])
    return {"p50": float(p50), "p99": float(p99), "max": float(samples_ms.max())}


def build_status(feeds: list[dict], pairs: list[dict], latency_ms: np.ndarray) -> dict:
    """The ``pairstack status --json`` object from feed stats, pair states and latency samples.

    ``pairs`` rows carry ``pair``, ``last_bar`` (ms or None), ``beta``, ``z``, ``position``,
    ``bars`` (bars stepped); a pair is ``warm`` when both legs are warm in some feed's
    ``warm_symbols`` (their warm-up windows were full when the feeds went live).
    """
    warm = {s for f in feeds for s, w in f.get("warm_symbols", {}).items() if w}
    feed_keys = (
        "symbols",
        "connected",
        "ticks_per_s",
        "ticks",
        "rejected",
        "gaps_backfilled",
        "late_ticks",
        "reconnects",
    )
    out_feeds = []
    for f in feeds:
        row = {k: f[k] for k in feed_keys}
        row.update({k: v for k, v in f.items() if k not in row})
        out_feeds.append(row)
    out_pairs = [
        {
            "pair": p["pair"],
            "last_bar": iso_ms(p["last_bar"]),
            "beta": _num(p["beta"]),
            "z": _num(p["z"]),
            "position": int(p["position"]),
            "warm": all(s in warm for s in p["pair"].split("/")),
            "bars": int(p.get("bars", 0)),
        }
        for p in sorted(pairs, key=lambda p: p["pair"])
    ]
    return {"feeds": out_feeds, "pairs": out_pairs, "latency_ms": latency_summary(latency_ms)}
