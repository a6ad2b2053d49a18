"""The Hub: named actor "pairstack-hub" (namespace "pairstack") that ties the engine together.

It holds the config, the registry of FeedActors and PairActors, the alert rules (changeable at
run time, pushed to the PairActors) and the alert history, both kept by an
``engine.alerts.AlertLog`` under ``<store>/alerts/`` so they survive restarts, and the pairs added
at run time (``add_pairs``, kept in the store by ``engine.runtime_pairs``). ``status()``
gathers the actors' stats and returns ``engine.status.build_status`` of them: exactly the object
``pairstack status --json`` prints (docs/semantics.md "CLI"). The class is plain; ``ray.remote``
is applied where it is constructed (actors/engine.py) with ``max_concurrency`` > 1, so the Hub
must not hold its lock while it waits on other actors.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from actors.args import as_config, lookup_actor
from engine.alerts import AlertLog, AlertRule, rules_from_config
from engine.errors import ConfigError
from engine.pairbook import parse_pair
from engine.runtime_pairs import hosted, read_added, record_added
from engine.schemas import timeframe_ms
from engine.status import build_status, iso_ms

log = logging.getLogger(__name__)

HUB_NAME = "pairstack-hub"
NAMESPACE = "pairstack"
#: seconds the Hub waits for an actor before it reports it as unavailable
CALL_TIMEOUT_S = 10.0
#: seconds a PairActor may take to warm up pairs added at run time (it reads the store)
ADD_TIMEOUT_S = 300.0


class Hub:
    """Registry, status, alert rules and history of one running engine.

    Restartable: ``config`` may be the Config or its ``to_dict()``, and ``feeds``/``pair_actors``
    name the engine's actors (name -> symbols, name -> pairs) in ``namespace``: a restarted Hub
    looks them up by name when it first needs them, and its alert rules and history come back
    from the store's ``AlertLog``.
    """

    def __init__(
        self,
        config: object,
        store_path: str | os.PathLike,
        *,
        feeds: dict[str, list[str]] | None = None,
        pair_actors: dict[str, list[str]] | None = None,
        namespace: str | None = None,
    ):
        self._config = as_config(config)
        self._namespace = namespace
        self._lock = threading.Lock()
        self._alerts = AlertLog(store_path, rules_from_config(self._config.alerts))
        self._feeds: dict[str, tuple[object | None, list[str]]] = {
            name: (None, list(syms)) for name, syms in (feeds or {}).items()
        }
        self._store_path = store_path
        self._pair_actors: dict[str, tuple[object | None, list[str]]] = {}
        self._pair_home: dict[str, str] = {}
        added = read_added(store_path) if pair_actors else {}
        for name, pairs in (pair_actors or {}).items():
            pairs = [*pairs, *hosted(list(pairs), added.get(name, []))]
            self._pair_actors[name] = (None, pairs)
            self._pair_home.update(dict.fromkeys(pairs, name))

    def _handle(self, registry: dict, name: str) -> object | None:
        """The handle of a registered actor, looked up by name when not known yet (None when
        it does not exist); call with the lock held."""
        handle, items = registry[name]
        if handle is None:
            handle = lookup_actor(name, self._namespace)
            if handle is not None:
                registry[name] = (handle, items)
        return handle

    # -- registry -------------------------------------------------------------------------
    def config(self) -> object:
        return self._config

    def feeds(self) -> dict[str, list[str]]:
        with self._lock:
            return {name: syms for name, (_, syms) in self._feeds.items()}

    def pairs(self) -> list[str]:
        with self._lock:
            return sorted(self._pair_home)

    def add_pairs(self, pairs: list[str]) -> list[str]:
        """Step ``pairs`` ("Y/X") live from now on, without a restart; returns those added
        (pairs already running are skipped). Each goes to a PairActor whose feeds carry both
        legs (ConfigError naming the pair when none does: such a pair needs the config and a
        restart); the actor warms it up from the store, and the addition is kept under
        ``<store>/state/pairs_added.json`` so that a restarted Hub or PairActor has it too."""
        import ray

        with self._lock:
            new = [p for p in dict.fromkeys(pairs) if p not in self._pair_home]
            homes: dict[str, list[str]] = {}
            for pair in new:
                legs = set(parse_pair(pair))
                home = next(
                    (
                        name
                        for name, (_, hosted_pairs) in self._pair_actors.items()
                        if legs <= {s for p in hosted_pairs for s in parse_pair(p)}
                    ),
                    None,
                )
                if home is None:
                    raise ConfigError(
                        f"pair {pair!r}: no pair actor is fed both legs (the live engine can "
                        "add pairs of symbols one of its actors already steps together); add "
                        "it to the config's pairs and restart the engine"
                    )
                homes.setdefault(home, []).append(pair)
            handles = {name: self._handle(self._pair_actors, name) for name in homes}
        missing = [name for name, h in handles.items() if h is None]
        if missing:
            raise KeyError(f"pair actors {missing} are not running: try again once they are")
        refs = {name: handles[name].add_pairs.remote(group) for name, group in homes.items()}
        added: list[str] = []
        for name, ref in refs.items():
            got = ray.get(ref, timeout=ADD_TIMEOUT_S)
            with self._lock:
                hosted_pairs = self._pair_actors[name][1]
                hosted_pairs.extend(p for p in got if p not in hosted_pairs)
                self._pair_home.update(dict.fromkeys(got, name))
                record_added(self._store_path, name, got)
            added.extend(got)
        return added

    def _handles(self, registry: dict) -> list[object]:
        """Handles of every registered actor that exists (call with the lock held)."""
        handles = (self._handle(registry, name) for name in list(registry))
        return [h for h in handles if h is not None]

    # -- proxies for the UI -----------------------------------------------------------------
    def _pair_actor(self, pair: str) -> object:
        with self._lock:
            if pair not in self._pair_home:
                raise KeyError(
                    f"unknown pair {pair!r}: running pairs are {sorted(self._pair_home)}"
                )
            name = self._pair_home[pair]
            handle = self._handle(self._pair_actors, name)
        if handle is None:
            raise KeyError(f"pair actor {name!r} of {pair!r} is not running")
        return handle

    def _feed_of(self, symbol: str) -> object:
        with self._lock:
            for name, (_, symbols) in self._feeds.items():
                if symbol in symbols:
                    handle = self._handle(self._feeds, name)
                    if handle is None:
                        raise KeyError(f"feed {name!r} of {symbol!r} is not running")
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
        """Exactly the ``pairstack status --json`` object (docs/semantics.md "CLI")."""
        import ray

        with self._lock:
            feed_handles = self._handles(self._feeds)
            pair_handles = self._handles(self._pair_actors)
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
        out = build_status(feeds, pairs, lat)
        # stale: no bar yet, or the last one opened over max(60 s, 3 bars) ago (pairs stalled)
        fresh_ms = max(60_000, 3 * timeframe_ms(self._config.analytics.timeframe))
        last = {p["pair"]: p["last_bar"] for p in pairs}
        for row in out["pairs"]:
            ts = last[row["pair"]]
            row["stale"] = ts is None or time.time() * 1000.0 - ts > fresh_ms
        return out

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
            handles = self._handles(self._pair_actors)
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
