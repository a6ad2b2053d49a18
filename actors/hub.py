"""The Hub: named actor "pairstack-hub" (namespace "pairstack") that ties the engine together.

It holds the config, the registry of FeedActors and PairActors, the alert rules (changeable at
run time, pushed to the PairActors) and the alert history, both kept by an
``engine.alerts.AlertLog`` under ``<store>/alerts/`` so they survive restarts. ``status()``
gathers the actors' stats and returns ``engine.status.build_status`` of them: exactly the
object ``pairstack status --json`` prints (DESIGN.md "CLI"). The class is plain; ``ray.remote`` is
applied where it is constructed (actors/engine.py) with ``max_concurrency`` > 1, so the Hub must
not hold its lock while it waits on other actors.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from engine.alerts import AlertLog, AlertRule, rules_from_config
from engine.status import build_status, iso_ms

log = logging.getLogger(__name__)

HUB_NAME = "pairstack-hub"
NAMESPACE = "pairstack"
#: seconds the Hub waits for an actor before it reports it as unavailable
CALL_TIMEOUT_S = 10.0


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
        parsed = rules_from_config(rules)
        with self._lock:
            self._alerts.set_rules(parsed)
            current = list(self._alerts.rules)
            handles = [h for h, _ in self._pair_actors.values()]
        for h in handles:
            h.set_rules.remote(current)
        return current

    def add_rule(self, rule: AlertRule | dict) -> list[AlertRule]:
        return self.set_rules([*self.rules(), *rules_from_config([rule])])

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
