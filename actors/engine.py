"""Start and stop the whole engine from a Config: what ``pairstack run`` and the UI both call.

``start_engine(config)`` connects to Ray (``ray_address``, else ``config.ray.address``, else
``RAY_ADDRESS``; without any, a local cluster sized for the machine, no dashboard; an already
initialised Ray is used as is), starts the simulator inside the cluster when ``feed.source`` is
``simulator`` and no URLs are given, then the Hub, the PairActors (``ray.pairs_per_actor`` pairs
each, warmed up from the store) and the FeedActors (``feed.symbols_per_connection`` symbols
each; both "auto" by default: ``engine.sizing`` from the cluster's CPUs).
``EngineHandle.stop()`` stops the feeds (last bars published, stores flushed), then ends every
actor it started.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actors.feed import FeedActor
from actors.hub import HUB_NAME, NAMESPACE, Hub
from actors.pair import PairActor
from actors.ray_init import cluster_auth, init_ray
from engine.atomic import write_atomic
from engine.errors import ConfigError
from engine.pairbook import parse_pair
from engine.sizing import size_engine
from engine.warmup import window
from strategies import check_config

log = logging.getLogger(__name__)

#: seconds to wait for actors to start or stop
START_TIMEOUT_S = 120.0


#: file name of the record a running engine leaves (in its store and in the user cache dir)
ENGINE_RECORD = "engine.json"


def record_paths(store_path: str) -> list[Path]:
    """``<store>/engine.json`` and ``$XDG_CACHE_HOME/pairstack/engine.json`` (default
    ``~/.cache``): where ``pairstack run`` records the Ray address of its engine."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [Path(store_path) / ENGINE_RECORD, cache / "pairstack" / ENGINE_RECORD]


def record_engine(store_path: str, address: str, hub_name: str, namespace: str) -> dict:
    """Write the engine record (atomically) where ``record_paths`` say; returns it.

    Besides where the Hub is, it holds the engine's host and pid (``engine_gone``) and Ray's auth
    mode and token file (``cluster_auth``), so a fresh shell can join the cluster."""
    record = {
        "address": address,
        "hub": hub_name,
        "namespace": namespace,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **cluster_auth(),
        "started_ms": int(time.time() * 1000),
        "store": str(Path(store_path).resolve()),
    }
    for path in record_paths(store_path):
        try:
            write_atomic(path, json.dumps(record))
        except OSError as exc:  # the cache dir may be read-only; the store copy is what counts
            log.warning("cannot record the engine address in %s: %s", path, exc)
    return record


def read_engine_record(path: Path) -> dict | None:
    """A record written by ``record_engine``, None when missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "address" in record else None


def clear_engine_record(store_path: str, pid: int | None = None) -> None:
    """Remove the records written by process ``pid`` (default: this one): a stopped engine has
    no address."""
    pid = os.getpid() if pid is None else pid
    for path in record_paths(store_path):
        record = read_engine_record(path)
        if record is not None and record.get("pid") == pid:
            path.unlink(missing_ok=True)


def engine_gone(record: dict) -> bool:
    """Whether the record's engine process is known to be dead (it ran on this host and its
    pid is gone, e.g. killed -9 before it could clear its record)."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class SimulatorActor:
    """Ray actor body: the exchange simulator serving websocket + REST from inside the cluster."""

    def __init__(self, config: object):
        from engine.simulator import Simulator

        self.sim = Simulator(config.simulator, config.symbols)
        self.sim.start_in_thread()

    def urls(self) -> tuple[str, str]:
        """(websocket base, REST base) the feeds connect to."""
        return self.sim.url_ws, self.sim.url_rest

    def history(self, symbol: str) -> np.ndarray:
        """Every trade the simulated exchange made for ``symbol`` (TICK_DTYPE)."""
        return self.sim.history(symbol)


def shard(items: list, size: int) -> list[list]:
    """Consecutive chunks of at most ``size`` items."""
    if size < 1:
        raise ConfigError(f"shard size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class EngineHandle:
    """A running engine: its actors, the URLs its feeds use, and how to stop it."""

    config: object
    hub: object
    feeds: dict[str, object]
    pair_actors: dict[str, object]
    simulator: object | None
    ws_url: str
    rest_url: str
    owns_ray: bool = False
    stopped: bool = field(default=False, init=False)

    def status(self) -> dict:
        """The ``pairstack status --json`` object."""
        import ray

        return ray.get(self.hub.status.remote(), timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop feeds (publishing their last bars, flushing their stores), then every actor."""
        import ray

        if self.stopped:
            return
        self.stopped = True
        try:
            ray.get([f.stop.remote() for f in self.feeds.values()], timeout=START_TIMEOUT_S)
            # a checkpoint of every pair, so the next start replays only what comes after it
            ray.get(
                [p.checkpoint.remote() for p in self.pair_actors.values()], timeout=START_TIMEOUT_S
            )
        finally:
            others = [self.hub, *([self.simulator] if self.simulator is not None else [])]
            for handle in [*self.feeds.values(), *self.pair_actors.values(), *others]:
                ray.kill(handle, no_restart=True)
            if self.owns_ray:
                ray.shutdown()
        log.info("engine stopped")


def start_engine(
    config: object,
    *,
    ray_address: str | None = None,
    hub_name: str = HUB_NAME,
    namespace: str = NAMESPACE,
) -> EngineHandle:
    """Start feeds, pairs and the Hub for ``config`` (see the module docstring).

    ``hub_name`` names the Hub; the other actors are named after it (``<hub>.feed-<i>``,
    ``<hub>.pairs-<j>``, ``<hub>.simulator``), all in ``namespace``.
    """
    import ray

    check_config(config.strategy)  # a ConfigError here, not a traceback from inside an actor
    owns_ray = init_ray(ray_address or config.ray.address, namespace=namespace)
    opts = {"namespace": namespace}
    restartable = {**opts, "max_restarts": -1, "max_task_retries": -1}
    ws_url, rest_url, sim = config.feed.ws_url, config.feed.rest_url, None
    if config.feed.source == "simulator" and (ws_url is None or rest_url is None):
        sim = (
            ray.remote(SimulatorActor).options(name=f"{hub_name}.simulator", **opts).remote(config)
        )
        sim_ws, sim_rest = ray.get(sim.urls.remote(), timeout=START_TIMEOUT_S)
        ws_url, rest_url = ws_url or sim_ws, rest_url or sim_rest
    if ws_url is None or rest_url is None:
        raise ConfigError("feed.ws_url and feed.rest_url are needed for a binance feed")
    sizes = size_engine(
        len(config.pair_names),
        len(config.symbols),
        ray.cluster_resources().get("CPU", 1.0),
        pairs_per_actor=config.ray.pairs_per_actor,
        symbols_per_connection=config.feed.symbols_per_connection,
        streams_per_symbol=2 if config.feed.funding else 1,
    )
    feed_shards = shard(list(config.symbols), sizes.symbols_per_connection)
    feed_names = [f"{hub_name}.feed-{i}" for i in range(len(feed_shards))]
    pair_shards = shard(list(config.pair_names), sizes.pairs_per_actor)
    plain = config.to_dict()  # restartable actors get plain data and names, never handles
    # the warm-up window of this start: where pair actors replay the store from (restarts too)
    replay_from = window(config.analytics.warmup_bar_count, config.analytics.timeframe,
                         time.time() * 1000.0)[0]  # fmt: skip
    hub = (
        ray.remote(Hub)
        .options(name=hub_name, max_concurrency=8, **restartable)
        .remote(
            plain,
            config.store.path,
            feeds=dict(zip(feed_names, feed_shards, strict=True)),
            pair_actors={f"{hub_name}.pairs-{j}": p for j, p in enumerate(pair_shards)},
            namespace=namespace,
        )
    )
    pair_actors, pair_symbols = {}, {}
    for j, pairs in enumerate(pair_shards):
        name = f"{hub_name}.pairs-{j}"
        pair_actors[name] = (
            ray.remote(PairActor)
            .options(name=name, **restartable)
            .remote(
                plain,
                pairs,
                name=name,
                feed_names=feed_names,
                hub_name=hub_name,
                namespace=namespace,
                replay_from_ms=replay_from,
            )
        )
        pair_symbols[name] = sorted({s for p in pairs for s in parse_pair(p)})
    ray.get([p.ping.remote() for p in pair_actors.values()], timeout=START_TIMEOUT_S)
    feeds = {}
    for name, symbols in zip(feed_names, feed_shards, strict=True):
        targets = [(n, syms) for n, syms in pair_symbols.items() if set(syms) & set(symbols)]
        feeds[name] = (
            ray.remote(FeedActor)
            .options(name=name, **restartable)
            .remote(
                plain,
                symbols,
                ws_url=ws_url,
                rest_url=rest_url,
                targets=targets,
                namespace=namespace,
            )
        )
    ray.get([f.ping.remote() for f in feeds.values()], timeout=START_TIMEOUT_S)
    log.info(
        "engine started: %d feeds, %d pair actors, %d pairs, feed %s",
        len(feeds),
        len(pair_actors),
        len(config.pairs),
        ws_url,
    )
    return EngineHandle(config, hub, feeds, pair_actors, sim, ws_url, rest_url, owns_ray)
