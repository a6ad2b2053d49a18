"""PairActor: the Ray shell of an ``engine.pairbook.PairBook`` (many pairs per actor).

Data in: batches from FeedActors, one packet per batch (an ``engine.packets.BarPacket``), handed
to the book as is: over the actor's bar lane (``engine.lane``, a direct socket whose address
``bar_lane()`` gives) or by the actor call ``on_bars(packet)``, which a feed uses until its lane
is open. The lane's reader thread and the actor's methods share the book under one lock.

The actor builds the strategy (``strategies.make_strategy``), warms the book up from the store
(after the checkpoint of ``engine.checkpoint`` when there is a valid one) and the feeds' recent
bars, turns the book's final times into latency samples once the state is readable, sends fired
alerts to the Hub and takes checkpoints.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import numpy as np

from actors.args import as_config, lookup_actor
from actors.gil import hand_over_quickly
from engine import packets
from engine.alerts import AlertRule
from engine.bars import NO_WATERMARK
from engine.checkpoint import (
    checkpoint_path,
    config_fingerprint,
    read_checkpoint,
    write_checkpoint,
)
from engine.errors import ConfigError
from engine.lane import LaneListener
from engine.pairbook import PairBook, parse_pair
from engine.runtime_pairs import hosted, read_added
from strategies import make_strategy

log = logging.getLogger(__name__)

#: on a restart, alerts of bars this recent (ms) are sent to the Hub again (it dedupes)
ALERT_RESEND_MS = 5 * 60_000
#: seconds between two checkpoints of a named PairActor
CHECKPOINT_S = 60.0


class PairActor:
    """Ray actor body: a PairBook warmed up from the store, alerts sent to the Hub.

    ``config`` may be the Config or its ``to_dict()`` (what the engine passes, so a restart
    never depends on objects of the driver). ``feed_names``/``hub_name`` are named actors in
    ``namespace``, looked up (when Ray runs) at (re)start: the warm-up restores the checkpoint
    ``<store>/state/pairs/<name>.npz`` when there is one taken under the same analytics,
    strategy and pairs, replays the stored bars after it (all of them without one), then each
    feed's recent in-memory bars so a restarted actor misses nothing the store had not flushed
    yet. With a ``name``, a checkpoint is taken every ``checkpoint_s`` seconds (written by a
    background thread) and on ``stop``.

    ``replay_from_ms``: where a replay of a symbol no checkpoint covers starts (bar open time,
    ms; None: the first stored bar). The engine passes the start of the warm-up window of its
    start (``analytics.warmup_bars`` before it), the same to every restart of the actor, so a
    first start reads the recent history and not months of stored bars, and a restart with no
    checkpoint yet replays exactly what the first start did.
    """

    def __init__(
        self,
        config: object,
        pairs: list[str],
        *,
        name: str | None = None,
        feed_names: Iterable[str] = (),
        hub_name: str | None = None,
        namespace: str | None = None,
        checkpoint_s: float = CHECKPOINT_S,
        replay_from_ms: int | None = None,
    ):
        config = as_config(config)
        hand_over_quickly()  # bar closes wait for no writer thread (actors.gil)
        if name:  # pairs added at run time ("watch live") come back after a restart
            pairs = [*pairs, *hosted(pairs, read_added(config.store.path).get(name, []))]
        self._config = config
        self.book = PairBook(config.analytics, make_strategy(config.strategy), pairs)
        self._hub = None
        self._feeds: list = []
        self._fingerprint = config_fingerprint(config.analytics, config.strategy, pairs)
        self._ckpt = checkpoint_path(config.store.path, name) if name else None
        self._ckpt_every_s = float(checkpoint_s)
        self._ckpt_thread: threading.Thread | None = None
        self.restored = False
        self._replay_from = replay_from_ms
        self._lock = threading.RLock()  # the book: lane thread and actor methods
        self._lane: LaneListener | None = None
        self.received = {"lane": 0, "call": 0}  # packets by the way they came
        self._warm_up(config, list(feed_names), hub_name, namespace)
        self._ckpt_at = time.monotonic()

    def _warm_up(
        self, config: object, feed_names: list[str], hub_name: str | None, ns: str | None
    ) -> None:
        rules: list[AlertRule] = []
        hub = None
        feeds = []
        if feed_names or hub_name:
            import ray

            if ray.is_initialized():
                feeds = [h for h in (lookup_actor(n, ns) for n in feed_names) if h is not None]
                hub = lookup_actor(hub_name, ns) if hub_name else None
                if hub is not None:
                    rules = ray.get(hub.rules.remote())
        # replay with the rules in force, so their armed state is what it would have been;
        # recent events go to the Hub again (it keeps each (rule, ts) once): one fired just
        # before a crash may not have reached it
        self.book.alerts.set_rules(rules)
        state = read_checkpoint(self._ckpt, self._fingerprint) if self._ckpt else None
        if state is not None:
            try:
                self.book.restore(state)
                self.restored = True
            except ConfigError as exc:
                log.warning("checkpoint %s not restored (%s): full replay", self._ckpt, exc)
        self._hub, self._feeds = hub, feeds
        events, _ = self.book.feed(self._history(self.book.resume_from()), live=False)
        now = time.time() * 1000.0
        self._send_alerts([e for e in events if e["ts"] >= now - ALERT_RESEND_MS], now)
        log.info(
            "pair actor warmed up: %d pairs (%s)",
            len(self.book.names),
            "from a checkpoint" if self.restored else "replayed from the store",
        )

    def _history(self, starts: dict[str, int]) -> list[dict]:
        """Entries of the stored bars of each symbol from ``starts[symbol]`` (open time, ms;
        NO_WATERMARK: from ``replay_from_ms``; resampled from finer stored bars where the store
        lacks the timeframe), then the feeds' recent in-memory bars of those symbols."""
        from engine.resample import read_timeframe
        from engine.store import Store

        store = Store(self._config.store.path)
        entries = []
        for sym, start in starts.items():
            since = self._replay_from if start == NO_WATERMARK else start
            bars = read_timeframe(store, self.book.tf, sym, start=since).bars
            wm = int(bars["ts"][-1]) + self.book.tf_ms if len(bars) else NO_WATERMARK
            entries.append({"symbol": sym, "wm": wm, "bars": bars, "advances": []})
        if self._feeds:
            import ray

            refs = [f.recent_for.remote(list(starts), self.book.tf) for f in self._feeds]
            for chunk in ray.get(refs):
                entries.extend(chunk)
        return entries

    def add_pairs(self, pairs: list[str]) -> list[str]:
        """Step ``pairs`` from now on (legs among this actor's symbols, else ConfigError),
        warmed up on their legs' stored bars from ``replay_from_ms`` and the feeds' recent ones;
        returns those added. A checkpoint is taken at once (under the grown book's fingerprint);
        the Hub records the pairs in the store (``engine.runtime_pairs``) for a restart."""
        legs = sorted({s for p in pairs for s in parse_pair(p)})
        missing = sorted(set(legs) - set(self.book.symbols))
        if missing:
            raise ConfigError(
                f"pairs {pairs}: {', '.join(missing)} not fed to this pair actor (its symbols: "
                f"{self.book.symbols})"
            )
        with self._lock:  # no packet between the history read and the grown book's checkpoint
            added = self.book.add_pairs(pairs, self._history(dict.fromkeys(legs, NO_WATERMARK)))
            if added:
                cfg = self._config
                self._fingerprint = config_fingerprint(cfg.analytics, cfg.strategy, self.book.names)
                self.checkpoint(wait=True)
                log.info("pair actor: now also stepping %s", ", ".join(added))
        return added

    def checkpoint(self, wait: bool = True) -> bool:
        """Save every pair's state now (copied here, written by a background thread; with
        ``wait``, return once it is on disk). False when this actor has no name or a previous
        write is still running."""
        if self._ckpt is None or (self._ckpt_thread is not None and self._ckpt_thread.is_alive()):
            return False
        with self._lock:
            state = self.book.checkpoint()
        self._ckpt_at = time.monotonic()
        self._ckpt_thread = threading.Thread(
            target=write_checkpoint, args=(self._ckpt, self._fingerprint, state), daemon=True
        )
        self._ckpt_thread.start()
        if wait:
            self._ckpt_thread.join()
        return True

    def on_bars(self, packet: packets.BarPacket) -> None:
        """One batch from a FeedActor by actor call (see the module docstring)."""
        self._take(packet, "call")

    def bar_lane(self) -> tuple[str, int, bytes]:
        """``(host, port, token)`` of this actor's bar lane (``engine.lane``), opened on the
        first call, on this node's address."""
        if self._lane is None:
            import ray

            host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
            self._lane = LaneListener(host, lambda packet: self._take(packet, "lane"))
        return (*self._lane.address, self._lane.token)

    def _take(self, packet: packets.BarPacket, way: str) -> None:
        with self._lock:
            events, finals = self.book.feed(packet)
            now = time.time() * 1000.0
            self.book.latency.add(now, (now - f for f in finals))
            self.received[way] += 1
            self._send_alerts(events, now)
            if self._ckpt is not None and time.monotonic() - self._ckpt_at >= self._ckpt_every_s:
                self.checkpoint(wait=False)

    def _send_alerts(self, events: list[dict], now: float) -> None:
        if events and self._hub is not None:
            for ev in events:
                ev["fired_at"] = int(now)
            self._hub.record_alerts.remote(events)

    def set_rules(self, rules: list[AlertRule]) -> None:
        with self._lock:
            self.book.alerts.set_rules(rules)

    def snapshot(self, pair: str) -> dict[str, np.ndarray]:
        """Ring buffers of one pair: ts (ms), close_y, close_x, beta, beta_ols, spread, z,
        position; oldest first."""
        with self._lock:
            return self.book.snapshot(pair)

    def status(self, since_ms: float | None = None) -> dict:
        """``{"pairs": rows, "latency_ms": samples of the last 60 s}`` (after ``since_ms``),
        ``"received"``: packets taken by lane and by call."""
        with self._lock:
            return {
                "pairs": self.book.rows(),
                "latency_ms": self.book.latency.samples(time.time() * 1000.0, since_ms),
                "received": dict(self.received),
            }

    def ping(self) -> bool:
        return True
