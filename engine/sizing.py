"""How many feed connections and pair actors an engine runs: ``auto`` sizing from the CPUs.

Every busy process costs a share of a core, and at every bar close all feeds and pair actors
wake at once; an actor call costs about 1 ms on a small machine. So on few cores the engine
runs few, large actors (on 2 cores one FeedActor and one PairActor hold 1,000 pairs over 100
symbols at p99 under 10 ms, where 40 small pair actors reach p99 of a second), and it spreads
over more actors where more cores exist, keeping a core's share for the simulator, the Hub
and the driver:

- pair actors: one per 2 CPUs, at most one per ``MIN_PAIRS_PER_ACTOR`` pairs, at least one;
- feed connections: one per 4 CPUs, at most one per ``MIN_SYMBOLS_PER_CONNECTION`` symbols,
  and never more streams on a connection than Binance allows (1,024).

A number given in the config is used as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.binance import WS_MAX_STREAMS

#: a pair actor is not worth its process below this many pairs
MIN_PAIRS_PER_ACTOR = 100
#: a connection is not worth its process below this many symbols
MIN_SYMBOLS_PER_CONNECTION = 50
#: CPUs per pair actor, per feed connection
CPUS_PER_PAIR_ACTOR = 2
CPUS_PER_CONNECTION = 4


@dataclass(frozen=True)
class Sizing:
    """Resolved sizes: pairs per PairActor, symbols per FeedActor (websocket connection)."""

    pairs_per_actor: int
    symbols_per_connection: int

    def actors(self, n_pairs: int, n_symbols: int) -> tuple[int, int]:
        """(pair actors, feed connections) for that many pairs and symbols."""
        return (
            math.ceil(n_pairs / self.pairs_per_actor) if n_pairs else 0,
            math.ceil(n_symbols / self.symbols_per_connection) if n_symbols else 0,
        )


def _spread(items: int, workers: int) -> int:
    """Items per worker when ``items`` are spread evenly over ``workers`` (at least 1)."""
    return max(1, math.ceil(items / max(1, workers)))


def size_engine(
    n_pairs: int,
    n_symbols: int,
    cpus: float,
    *,
    pairs_per_actor: int | str = "auto",
    symbols_per_connection: int | str = "auto",
    streams_per_symbol: int = 2,
) -> Sizing:
    """Sizes for ``n_pairs`` pairs over ``n_symbols`` symbols on a cluster of ``cpus`` CPUs.

    ``pairs_per_actor``/``symbols_per_connection``: "auto" or the number the config gives.
    ``streams_per_symbol``: websocket streams per symbol (aggTrade, plus markPrice with
    funding on).
    """
    if n_pairs < 0 or n_symbols < 0 or not cpus > 0 or streams_per_symbol < 1:
        raise ValueError(
            f"size_engine: expected pairs, symbols >= 0, cpus > 0 and streams_per_symbol >= 1,"
            f" got {n_pairs}, {n_symbols}, {cpus}, {streams_per_symbol}"
        )
    if pairs_per_actor == "auto":
        most = max(1, math.floor(cpus / CPUS_PER_PAIR_ACTOR))
        worth = max(1, n_pairs // MIN_PAIRS_PER_ACTOR)
        pairs_per_actor = _spread(n_pairs, min(most, worth))
    if symbols_per_connection == "auto":
        cap = WS_MAX_STREAMS // streams_per_symbol
        most = max(1, math.floor(cpus / CPUS_PER_CONNECTION))
        worth = max(1, n_symbols // MIN_SYMBOLS_PER_CONNECTION)
        need = math.ceil(n_symbols / cap) if n_symbols else 1
        symbols_per_connection = min(cap, _spread(n_symbols, max(need, min(most, worth))))
    return Sizing(int(pairs_per_actor), int(symbols_per_connection))
