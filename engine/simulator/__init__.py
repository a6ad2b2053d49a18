"""The local exchange simulator (``pairstack sim``): Binance USD-M wire protocol on loopback.

``Simulator(SimulatorSettings(...))`` serves websocket market streams, REST and a public-data
archive on one host:port, from a seeded market of cointegrated symbols (``Market``, a
deterministic function of the seed and wall time with ``history_days`` of past), with
switchable faults (``FaultSettings``); ``Simulator.history`` gives its trades for zero-loss
checks.
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
