"""The seeded market model: groups of cointegrated perpetuals and their aggregate trades.

Log prices live on a grid of ``step_ms`` (100 ms). Every group has a leader whose log price is
a global market random walk plus the group's own random walk; every other member follows

    log p_k = alpha_k + beta_k * log p_leader + s_k,   s_k an AR(1) with half-life h_k (s)

so ``(log p_k, log p_leader)`` is cointegrated with the known hedge ratio ``beta_k``
(``Market.truth``). Trades arrive as a Poisson process whose intensity jumps by
``BURST_FACTOR`` during bursts (a two-state Markov chain), the mean staying ``rate`` per second;
a trade prints at the bid (buyer is maker) or the ask around the mid, so prices are multiples
of the tick size; sizes are lognormal in USDT and rounded to the step size (at least one step).

Deterministic for a seed, and chunk-invariant: every random quantity has its own generator, so
``advance`` in small steps gives exactly the trades of one ``generate`` over the same span.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.signal import lfilter

from engine.binance import check_symbol
from engine.errors import ConfigError, DataError
from engine.schemas import TICK_DTYPE

#: Intensity multiplier during a burst, chance per second of a burst starting, mean length (s).
BURST_FACTOR = 8.0
BURST_START_PER_S = 1.0 / 60.0
BURST_MEAN_S = 2.0
#: Median trade notional (USDT) and lognormal sigma of trade sizes.
MEDIAN_NOTIONAL = 2_000.0
SIZE_SIGMA = 1.2
#: Volatility of the market and group random walks, log price per sqrt(second).
MARKET_VOL = 1e-4
GROUP_VOL = 1e-4
#: Premium of mark over index: AR(1) std and half-life (s); interest rate per funding interval.
PREMIUM_SIGMA = 5e-4
PREMIUM_HALF_LIFE_S = 600.0
INTEREST_RATE = 1e-4
FUNDING_INTERVAL_MS = 8 * 3_600_000


@dataclass(frozen=True)
class SymbolSpec:
    """Exchange facts of one symbol: start price (USDT), tick and step sizes as decimal strings."""

    symbol: str
    price: float
    tick_size: str
    step_size: str
    price_precision: int
    quantity_precision: int

    @property
    def tick(self) -> float:
        return float(self.tick_size)

    @property
    def step(self) -> float:
        return float(self.step_size)


@dataclass(frozen=True)
class SymbolTruth:
    """True model parameters of one symbol.

    ``log p = alpha + beta * log p_leader + spread``; the spread is an AR(1) with half-life
    ``half_life_s`` seconds and stationary std ``spread_sigma`` (log). A leader has beta 1,
    alpha 0, spread 0 and half-life NaN.
    """

    symbol: str
    leader: str
    beta: float
    alpha: float
    half_life_s: float
    spread_sigma: float


class MarkQuote(NamedTuple):
    """Mark, index and estimated settle price (USDT) and funding rate (fraction per 8 h)."""

    mark: float
    index: float
    settle: float
    funding_rate: float


def _spec(symbol: str, price: float, tick_exp: int, step_exp: int) -> SymbolSpec:
    return SymbolSpec(
        symbol=symbol,
        price=price,
        tick_size=_decimal_power(tick_exp),
        step_size=_decimal_power(step_exp),
        price_precision=max(0, -tick_exp),
        quantity_precision=max(0, -step_exp),
    )


def _decimal_power(exp: int) -> str:
    return f"{10.0**exp:.{max(0, -exp)}f}"


CATALOGUE: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec("BTCUSDT", 97_000.0, "0.10", "0.001", 2, 3),
    "ETHUSDT": SymbolSpec("ETHUSDT", 3_500.0, "0.01", "0.001", 2, 3),
    "SOLUSDT": SymbolSpec("SOLUSDT", 200.0, "0.0100", "1", 4, 0),
    "BNBUSDT": SymbolSpec("BNBUSDT", 650.0, "0.010", "0.01", 3, 2),
    "XRPUSDT": SymbolSpec("XRPUSDT", 2.5, "0.0001", "0.1", 4, 1),
    "DOGEUSDT": SymbolSpec("DOGEUSDT", 0.35, "0.00001", "1", 5, 0),
    "ADAUSDT": SymbolSpec("ADAUSDT", 0.9, "0.0001", "1", 4, 0),
}


def symbol_spec(symbol: str, seed: int) -> SymbolSpec:
    """The catalogue entry, or a seeded made-up one (price 0.3-100 USDT, tick ~1 bp)."""
    if symbol in CATALOGUE:
        return CATALOGUE[symbol]
    rng = np.random.default_rng([seed, zlib.crc32(symbol.encode())])
    price = float(10.0 ** rng.uniform(-0.5, 2.0))
    tick_exp = math.floor(math.log10(price * 1e-4))
    step_exp = min(0, math.floor(math.log10(5.0 / price)))
    return _spec(symbol, round(price, -tick_exp), tick_exp, step_exp)


def auto_groups(symbols: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Symbols in order, two by two (an odd last one is a group of its own)."""
    return tuple(tuple(symbols[i : i + 2]) for i in range(0, len(symbols), 2))


def _ar1_coefficient(half_life_s: float, step_ms: int) -> float:
    return 0.5 ** (step_ms / 1000.0 / half_life_s)


class _SymbolState:
    """Mutable per-symbol generator state (ids, burst regime, last log price)."""

    def __init__(self, seed: int, index: int, spec: SymbolSpec, next_agg_id: int) -> None:
        def gen(kind: int) -> np.random.Generator:
            return np.random.default_rng([seed, 1000 + index, kind])

        self.spec = spec
        self.burst_rng, self.count_rng, self.time_rng = gen(0), gen(1), gen(2)
        self.side_rng, self.size_rng, self.fill_rng = gen(3), gen(4), gen(5)
        self.spread_rng, self.premium_rng = gen(6), gen(7)
        self.bursting = False
        self.next_agg_id = next_agg_id
        self.next_trade_id = 3 * next_agg_id
        self.spread = 0.0
        self.premium = 0.0
        self.log_price = math.log(spec.price)


class Market:
    """Seeded cointegrated market; ``advance(to_ms)`` yields the trades of the elapsed steps."""

    def __init__(
        self,
        symbols: tuple[str, ...] | list[str],
        *,
        seed: int = 0,
        rate: float = 5.0,
        groups: tuple[tuple[str, ...], ...] | None = None,
        step_ms: int = 100,
    ) -> None:
        symbols = tuple(check_symbol(s, ConfigError) for s in symbols)
        if not symbols or len(set(symbols)) != len(symbols):
            raise ConfigError(f"market symbols must be distinct and non-empty, got {symbols}")
        if not (math.isfinite(rate) and rate >= 0):
            raise ConfigError(f"market rate must be >= 0 trades/s, got {rate!r}")
        if not (isinstance(step_ms, int) and step_ms > 0):
            raise ConfigError(f"market step_ms must be a positive int, got {step_ms!r}")
        groups = auto_groups(symbols) if groups is None else tuple(tuple(g) for g in groups)
        flat = [s for g in groups for s in g]
        if any(not g for g in groups) or sorted(flat) != sorted(symbols):
            raise ConfigError(
                f"market groups {[list(g) for g in groups]} must hold every symbol of "
                f"{list(symbols)} exactly once"
            )
        self.symbols = symbols
        self.groups = groups
        self.seed = seed
        self.rate = float(rate)
        self.step_ms = step_ms
        self.specs = {s: symbol_spec(s, seed) for s in symbols}
        self.clock_ms: int | None = None

        params = np.random.default_rng([seed, 0])
        self._truth: dict[str, SymbolTruth] = {}
        for group in groups:
            leader = group[0]
            self._truth[leader] = SymbolTruth(leader, leader, 1.0, 0.0, math.nan, 0.0)
            for sym in group[1:]:
                beta = float(params.uniform(0.6, 1.5))
                half_life = float(params.uniform(30.0, 120.0))
                sigma = float(params.uniform(0.001, 0.002))
                alpha = math.log(self.specs[sym].price) - beta * math.log(self.specs[leader].price)
                self._truth[sym] = SymbolTruth(sym, leader, beta, alpha, half_life, sigma)
        ids = params.integers(1_000_000, 100_000_000, len(symbols))
        self._state = {
            s: _SymbolState(seed, i, self.specs[s], int(ids[i])) for i, s in enumerate(symbols)
        }
        self._market_rng = np.random.default_rng([seed, 1])
        self._group_rngs = [np.random.default_rng([seed, 2, i]) for i in range(len(groups))]
        self._market_factor = 0.0
        self._group_factor = [0.0] * len(groups)

    def truth(self, symbol: str) -> SymbolTruth:
        """True parameters of ``symbol`` relative to its group's leader."""
        try:
            return self._truth[symbol]
        except KeyError:
            raise DataError(f"unknown symbol {symbol!r}: market has {list(self.symbols)}") from None

    def start(self, start_ms: int) -> None:
        """Start the clock at ``start_ms`` (rounded down to the step grid)."""
        if self.clock_ms is not None:
            raise DataError(f"market already started at {self.clock_ms} ms")
        self.clock_ms = int(start_ms) // self.step_ms * self.step_ms

    def generate(self, start_ms: int, end_ms: int) -> dict[str, np.ndarray]:
        """Start the clock at ``start_ms`` and return the trades up to ``end_ms`` (fast history)."""
        if end_ms < start_ms:
            raise DataError(f"generate needs start_ms <= end_ms, got {start_ms} > {end_ms}")
        self.start(start_ms)
        return self.advance(end_ms)

    def advance(self, to_ms: int) -> dict[str, np.ndarray]:
        """TICK_DTYPE trades per symbol of the whole steps between the clock and ``to_ms``.

        Trade times fall in ``(step_start, step_start + step_ms]``; ids are consecutive per
        symbol across calls.
        """
        if self.clock_ms is None:
            raise DataError("market not started: call start(start_ms) or generate(...) first")
        n = max(0, (int(to_ms) - self.clock_ms) // self.step_ms)
        starts = self.clock_ms + self.step_ms * np.arange(n, dtype=np.int64)
        dt_s = self.step_ms / 1000.0
        market = self._walk(self._market_rng, MARKET_VOL * math.sqrt(dt_s), n, None)
        out: dict[str, np.ndarray] = {}
        for gi, group in enumerate(self.groups):
            walk = self._walk(self._group_rngs[gi], GROUP_VOL * math.sqrt(dt_s), n, gi)
            leader = self._state[group[0]]
            lead_log = math.log(leader.spec.price) + market + walk
            for sym in group:
                state, truth = self._state[sym], self._truth[sym]
                log_price = lead_log
                if sym != group[0]:
                    state.spread, spread = _ar1(
                        state.spread_rng, state.spread, truth.half_life_s, truth.spread_sigma,
                        self.step_ms, n,
                    )  # fmt: skip
                    log_price = truth.alpha + truth.beta * lead_log + spread
                state.premium, _ = _ar1(
                    state.premium_rng, state.premium, PREMIUM_HALF_LIFE_S, PREMIUM_SIGMA,
                    self.step_ms, n,
                )  # fmt: skip
                if n:
                    state.log_price = float(log_price[-1])
                out[sym] = self._trades(state, starts, log_price)
        self.clock_ms += n * self.step_ms
        return out

    def mark(self, symbol: str) -> MarkQuote:
        """Mark/index/settle price and funding rate at the clock (Binance's funding formula)."""
        state = self._state[symbol]
        index = math.exp(state.log_price)
        premium = state.premium
        mark = index * (1.0 + premium)
        rate = premium + min(max(INTEREST_RATE - premium, -5e-4), 5e-4)
        return MarkQuote(mark, index, 0.5 * (mark + index), rate)

    def _walk(self, rng: np.random.Generator, vol: float, n: int, group: int | None) -> np.ndarray:
        prev = self._market_factor if group is None else self._group_factor[group]
        path = np.cumsum(np.concatenate(([prev], rng.standard_normal(n) * vol)))[1:]
        if n:
            if group is None:
                self._market_factor = float(path[-1])
            else:
                self._group_factor[group] = float(path[-1])
        return path

    def _trades(self, state: _SymbolState, starts: np.ndarray, log_price: np.ndarray) -> np.ndarray:
        n = len(starts)
        dt_s = self.step_ms / 1000.0
        p_start = BURST_START_PER_S * dt_s
        p_stop = min(1.0, dt_s / BURST_MEAN_S)
        share = p_start / (p_start + p_stop)
        base = self.rate * dt_s / (1.0 - share + share * BURST_FACTOR)
        lam = np.full(n, base)
        u = state.burst_rng.random(n)
        bursting = state.bursting
        for i in range(n):
            bursting = (u[i] >= p_stop) if bursting else (u[i] < p_start)
            if bursting:
                lam[i] = base * BURST_FACTOR
        state.bursting = bursting
        counts = state.count_rng.poisson(lam) if n else np.zeros(0, np.int64)
        total = int(counts.sum())
        step = np.repeat(np.arange(n), counts)
        offsets = np.floor(state.time_rng.random(total) * self.step_ms).astype(np.int64) + 1
        spec = state.spec
        tick, lot = spec.tick, spec.step
        buyer_maker = state.side_rng.random(total) < 0.5
        bid = np.floor(np.exp(log_price[step]) / tick)
        ticks = np.maximum(np.where(buyer_maker, bid, bid + 1.0), 1.0)
        price = np.round(ticks * tick, spec.price_precision)
        notional = MEDIAN_NOTIONAL * np.exp(SIZE_SIGMA * state.size_rng.standard_normal(total))
        lots = np.maximum(np.round(notional / price / lot), 1.0)
        fills = state.fill_rng.poisson(1.0, total).astype(np.int64) + 1
        out = np.empty(total, dtype=TICK_DTYPE)
        out["ts"] = np.sort(starts[step] + offsets)
        out["agg_id"] = state.next_agg_id + np.arange(total, dtype=np.int64)
        out["price"] = price
        out["qty"] = np.round(lots * lot, spec.quantity_precision)
        ends = state.next_trade_id + np.cumsum(fills)
        out["first_id"] = ends - fills
        out["last_id"] = ends - 1
        out["buyer_maker"] = buyer_maker
        state.next_agg_id += total
        state.next_trade_id += int(fills.sum())
        return out


def _ar1(
    rng: np.random.Generator, prev: float, half_life_s: float, sigma: float, step_ms: int, n: int
) -> tuple[float, np.ndarray]:
    """(last value, path) of an AR(1) continuing from ``prev``; stationary std ``sigma``."""
    if n == 0:
        return prev, np.zeros(0)
    phi = _ar1_coefficient(half_life_s, step_ms)
    shocks = rng.standard_normal(n) * (sigma * math.sqrt(1.0 - phi * phi))
    path, _ = lfilter([1.0], [1.0, -phi], shocks, zi=[phi * prev])
    return float(path[-1]), path


def next_funding_ms(now_ms: int) -> int:
    """Next funding time (ms) on the 8 h grid (00:00, 08:00, 16:00 UTC) strictly after now."""
    return (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
