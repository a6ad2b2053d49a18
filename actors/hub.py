"""The Hub: named actor "pairstack-hub" (namespace "pairstack") that ties the engine together.

It holds the config, the registry of FeedActors and PairActors, the alert rules (changeable at
run time, pushed to the PairActors) and the alert history, both persisted under
``<store>/alerts/`` with atomic writes so they survive restarts. ``status()`` returns exactly the
object ``pairstack status --json`` prints (DESIGN.md "CLI"). The class is plain; ``ray.remote`` is
applied where it is constructed (actors/engine.py) with ``max_concurrency`` > 1, so the Hub must
not hold its lock while it waits on other actors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from actors.alerts import AlertRule, rules_from_config

log = logging.getLogger(__name__)

HUB_NAME = "pairstack-hub"
NAMESPACE = "pairstack"
#: alert events kept in memory and on disk
HISTORY_LIMIT = 10_000
#: seconds the Hub waits for an actor before it reports it as unavailable
CALL_TIMEOUT_S = 10.0


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

    ``pairs`` rows carry ``pair``, ``last_bar`` (ms or None), ``beta``, ``z``, ``position``.
    """
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
        }
        for p in sorted(pairs, key=lambda p: p["pair"])
    ]
    return {"feeds": out_feeds, "pairs": out_pairs, "latency_ms": latency_summary(latency_ms)}


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AlertLog:
    """Alert rules and fired-alert history persisted under ``<store>/alerts/`` (JSON, atomic)."""

    def __init__(self, store_path: str | os.PathLike, default_rules: list[AlertRule]):
        self.dir = Path(store_path) / "alerts"
        self.rules_path = self.dir / "rules.json"
        self.history_path = self.dir / "history.jsonl"
        if self.rules_path.exists():
            raw = json.loads(self.rules_path.read_text())
            self.rules = [AlertRule.from_dict(d) for d in raw]
        else:
            self.rules = list(default_rules)
        self.history: list[dict] = []
        if self.history_path.exists():
            lines = self.history_path.read_text().splitlines()
            self.history = [json.loads(line) for line in lines if line.strip()]

    def set_rules(self, rules: list[AlertRule]) -> None:
        self.rules = list({r.key: r for r in rules}.values())
        _atomic_write(self.rules_path, json.dumps([r.to_dict() for r in self.rules], indent=1))

    def record(self, events: list[dict]) -> list[dict]:
        """Append the events not recorded yet (one per rule and bar ts); returns them."""
        seen = {(e["rule"], e["ts"]) for e in self.history}
        events = [e for e in events if (e["rule"], e["ts"]) not in seen]
        if not events:
            return []
        self.history.extend(events)
        del self.history[:-HISTORY_LIMIT]
        _atomic_write(
            self.history_path, "".join(json.dumps(e, allow_nan=False) + "\n" for e in self.history)
        )
        return events

    def since(self, since_ms: int | None) -> list[dict]:
        if since_ms is None:
            return list(self.history)
        return [e for e in self.history if e["fired_at"] > since_ms]


class Hub:
    """Registry, status, alert rules and history of one running engine."""

    def __init__(self, config: object, store_path: str | os.PathLike):
        self._config = config
        self._lock = threading.Lock()
        self._alerts = AlertLog(store_path, rules_from_config(getattr(config, "alerts", ())))
        self._feeds: dict[str, tuple[object, list[str]]] = {}
        self._pair_actors: dict[str, tuple[object, list[str]]] = {}
        self._pair_home: dict[str, str] = {}

    # -- registry -------------------------------------------------------------------------
    def config(self) -> object:
        return self._config

    def register_feed(self, name: str, handle: object, symbols: list[str]) -> None:
        with self._lock:
            self._feeds[name] = (handle, list(symbols))

    def register_pair_actor(self, name: str, handle: object, pairs: list[str]) -> None:
        with self._lock:
            self._pair_actors[name] = (handle, list(pairs))
            for p in pairs:
                self._pair_home[p] = name
        handle.set_rules.remote(self.rules())

    def feeds(self) -> dict[str, list[str]]:
        with self._lock:
            return {name: syms for name, (_, syms) in self._feeds.items()}

    def pairs(self) -> list[str]:
        with self._lock:
            return sorted(self._pair_home)

    # -- proxies for the UI -----------------------------------------------------------------
    def _pair_actor(self, pair: str) -> object:
        with self._lock:
            if pair not in self._pair_home:
                raise KeyError(
                    f"unknown pair {pair!r}: running pairs are {sorted(self._pair_home)}"
                )
            return self._pair_actors[self._pair_home[pair]][0]

    def _feed_of(self, symbol: str) -> object:
        with self._lock:
            for handle, symbols in self._feeds.values():
                if symbol in symbols:
                    return handle
        raise KeyError(f"unknown symbol {symbol!r}: no feed carries it")

    def snapshot(self, pair: str) -> dict:
        """The pair's ring buffers (dict of NumPy arrays), from its PairActor."""
        import ray

        return ray.get(self._pair_actor(pair).snapshot.remote(pair), timeout=CALL_TIMEOUT_S)

    def snapshots_since(self, since: dict[str, int | None]) -> dict[str, dict]:
        """Per pair of ``since``: ``{"full": bool, "cols": ring buffers}``; ``cols`` holds the
        steps with ts (ms) after ``since[pair]``, or every kept step (``full``) when ``since``
        is None or older than the oldest kept step. One call for many pairs (the UI bridge)."""
        import ray

        pairs = list(since)
        refs = [self._pair_actor(p).snapshot.remote(p) for p in pairs]
        snaps = ray.get(refs, timeout=CALL_TIMEOUT_S) if refs else []
        return {p: _since(snap, since[p]) for p, snap in zip(pairs, snaps, strict=True)}

    def recent_bars(self, symbol: str, timeframe: str, n: int) -> np.ndarray:
        """The last ``n`` closed bars (BAR_DTYPE) of a symbol and timeframe, from its FeedActor."""
        import ray

        ref = self._feed_of(symbol).recent_bars.remote(symbol, timeframe, n)
        return ray.get(ref, timeout=CALL_TIMEOUT_S)

    # -- status -------------------------------------------------------------------------------
    def status(self) -> dict:
        """Exactly the ``pairstack status --json`` object (DESIGN.md "CLI")."""
        import ray

        with self._lock:
            feed_handles = [h for h, _ in self._feeds.values()]
            pair_handles = [h for h, _ in self._pair_actors.values()]
        feed_stats = _gather(ray, [h.stats.remote() for h in feed_handles])
        pair_rows = _gather(ray, [h.status.remote() for h in pair_handles])
        feeds = [s for s in feed_stats if s is not None]
        pairs, samples = [], []
        for row in pair_rows:
            if row is None:
                continue
            pairs.extend(row["pairs"])
            samples.append(row["latency_ms"])
        lat = np.concatenate(samples) if samples else np.empty(0)
        return build_status(feeds, pairs, lat)

    # -- alerts -------------------------------------------------------------------------------
    def rules(self) -> list[AlertRule]:
        with self._lock:
            return list(self._alerts.rules)

    def set_rules(self, rules: list[AlertRule | dict]) -> list[AlertRule]:
        """Replace the alert rules (persisted) and push them to every PairActor."""
        parsed = [r if isinstance(r, AlertRule) else AlertRule.from_dict(r) for r in rules]
        with self._lock:
            self._alerts.set_rules(parsed)
            current = list(self._alerts.rules)
            handles = [h for h, _ in self._pair_actors.values()]
        for h in handles:
            h.set_rules.remote(current)
        return current

    def add_rule(self, rule: AlertRule | dict) -> list[AlertRule]:
        rule = rule if isinstance(rule, AlertRule) else AlertRule.from_dict(rule)
        return self.set_rules([*self.rules(), rule])

    def remove_rule(self, key: str) -> list[AlertRule]:
        return self.set_rules([r for r in self.rules() if r.key != key])

    def record_alerts(self, events: list[dict]) -> None:
        """Called by PairActors with the events their rules fired (each stamped ``fired_at``);
        an event already recorded (same rule and bar ts) is dropped."""
        with self._lock:
            events = self._alerts.record(events)
        for e in events:
            log.info("alert %s: z=%.3f at %s", e["rule"], e["z"], iso_ms(e["ts"]))

    def alerts(self, since: int | None = None) -> list[dict]:
        """Fired alerts, oldest first; with ``since`` (wall ms) only those fired after it."""
        with self._lock:
            return self._alerts.since(since)

    def ping(self) -> float:
        return time.time()


def _since(snap: dict[str, np.ndarray], since_ms: int | None) -> dict:
    """The steps of a pair snapshot after ``since_ms`` (see ``Hub.snapshots_since``)."""
    ts = snap["ts"]
    if since_ms is None or (ts.size and ts[0] > since_ms):
        return {"full": True, "cols": snap}
    keep = ts > since_ms
    return {"full": False, "cols": {k: v[keep] for k, v in snap.items()}}


def _gather(ray: object, refs: list) -> list:
    """Results of actor calls; None for an actor that failed or did not answer in time."""
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=CALL_TIMEOUT_S) if refs else ([], [])
    done = set(ready)
    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref) if ref in done else None)
        except ray.exceptions.RayError as exc:
            log.warning("status: an actor failed to answer: %s", exc)
            out.append(None)
    return out
