"""The local exchange simulator (``pairstack sim``): Binance USD-M wire protocol on loopback.

``Simulator(SimulatorSettings(...))`` serves websocket market streams and REST on one
host:port, from a seeded market of cointegrated symbols (``Market``), with switchable faults
(``FaultSettings``) and the full trade history kept for zero-loss checks.
"""

from engine.simulator.market import Market, MarkQuote, SymbolSpec, SymbolTruth
from engine.simulator.server import EVENTS, Simulator
from engine.simulator.settings import REJECT_REASONS, FaultSettings, SimulatorSettings

__all__ = [
    "EVENTS",
    "REJECT_REASONS",
    "FaultSettings",
    "MarkQuote",
    "Market",
    "Simulator",
    "SimulatorSettings",
    "SymbolSpec",
    "SymbolTruth",
]
