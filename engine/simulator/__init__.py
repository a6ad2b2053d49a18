"""The local exchange simulator (``pairstack sim``): Binance USD-M wire protocol on loopback.

``Simulator(SimulatorConfig(...), symbols)`` (``engine.config``) serves websocket market
streams and REST on one host:port, from a seeded market of cointegrated symbols (``Market``),
with switchable faults (``FaultsConfig``) and the full trade history kept for zero-loss checks.
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
