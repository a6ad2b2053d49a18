"""The local exchange simulator (``pairstack sim``): Binance USD-M wire protocol on loopback.

``Simulator(SimulatorConfig(...), symbols)`` (the one simulator config, ``engine.config``)
serves websocket market streams, REST and a public-data archive on one host:port, from a
seeded market of cointegrated symbols (``Market``, a deterministic function of the seed and
wall time with ``history_days`` of past and per-symbol ``listings``), with switchable faults
(``FaultsConfig``); ``Simulator.history`` gives its trades for zero-loss checks.
"""

from engine.simulator.market import Market, MarkQuote, SymbolSpec, SymbolTruth
from engine.simulator.server import DEFAULT_SYMBOLS, EVENTS, Simulator

__all__ = [
    "DEFAULT_SYMBOLS",
    "EVENTS",
    "MarkQuote",
    "Market",
    "Simulator",
    "SymbolSpec",
    "SymbolTruth",
]
