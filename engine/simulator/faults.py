"""Fault injection: which trades to drop, corrupt or duplicate, and the corrupt frames.

A corrupt frame carries a real trade in a form a strict client rejects (reason names as in
``engine.binance.REJECT_REASONS``), so that trade is missing on the stream and must be refilled
over REST. Each kind cycles through its variants so every variant is exercised.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import orjson

from engine.config import FaultsConfig

#: Actions for one trade on one connection.
DELIVER = "deliver"
DROP = "drop"

_MISSING = ("s", "a", "p", "q", "T", "m", "f", "l", "E")
_BAD_TYPE = (("p", "number"), ("a", "string"), ("q", "number"), ("T", "string"),
             ("m", "string"), ("f", "string"))  # fmt: skip
_BAD_DECIMALS = ("NaN", "-1", "0", "inf")
_OTHER_EVENTS = ("trade", "depthUpdate")  # event kinds the client did not subscribe to


class FaultInjector:
    """Seeded per-trade decisions and corrupt-frame makers for one simulator."""

    def __init__(self, faults: FaultsConfig, seed: int) -> None:
        self.faults = faults
        self._rng = np.random.default_rng([seed, 99])
        self._kinds = itertools.cycle(faults.corrupt_kinds)
        self._variants: dict[str, Iterator[int]] = {}

    @property
    def active(self) -> bool:
        f = self.faults
        return f.drop_rate > 0 or f.corrupt_rate > 0 or f.duplicate_rate > 0

    def plan(self) -> tuple[str, bool]:
        """(action, duplicate) for one trade: DELIVER, DROP or a corrupt reason; and whether an
        earlier valid frame is re-sent after it."""
        f = self.faults
        u, v = self._rng.random(2)
        duplicate = bool(v < f.duplicate_rate)
        if u < f.drop_rate:
            return DROP, duplicate
        if u < f.drop_rate + f.corrupt_rate:
            kind = next(self._kinds)
            if kind == "duplicate":
                return DELIVER, True
            return kind, duplicate
        return DELIVER, duplicate

    def pick(self, n: int) -> int:
        """Index of the earlier frame to re-send among ``n`` candidates."""
        return int(self._rng.integers(0, n))

    def _variant(self, kind: str, n: int) -> int:
        it = self._variants.setdefault(kind, itertools.cycle(range(n)))
        return next(it) % n

    def corrupt_payload(self, kind: str, payload: dict, other_symbol: str) -> dict | None:
        """A corrupted copy of an aggTrade payload, or None for ``not_json`` (see ``truncate``)."""
        bad = dict(payload)
        if kind == "missing_field":
            del bad[_MISSING[self._variant(kind, len(_MISSING))]]
        elif kind == "bad_type":
            key, as_type = _BAD_TYPE[self._variant(kind, len(_BAD_TYPE))]
            value = bad[key]
            if as_type == "number":
                bad[key] = float(value)
            else:
                bad[key] = str(value).lower()
        elif kind in ("bad_price", "bad_qty"):
            key = "p" if kind == "bad_price" else "q"
            bad[key] = _BAD_DECIMALS[self._variant(kind, len(_BAD_DECIMALS))]
        elif kind == "bad_frame":
            bad["e"] = _OTHER_EVENTS[self._variant(kind, len(_OTHER_EVENTS))]
        elif kind == "unknown_symbol":
            bad["s"] = other_symbol
        elif kind == "not_json":
            return None
        else:
            raise ValueError(f"unknown corrupt kind {kind!r}")
        return bad


def truncate(frame: bytes) -> str:
    """A frame cut in the middle: never valid JSON (an object left open)."""
    return frame[: max(1, len(frame) // 2)].decode("utf-8", "replace")


def dumps(obj: object) -> str:
    """Compact JSON text frame."""
    return orjson.dumps(obj).decode()
