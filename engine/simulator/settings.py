"""Simulator settings: frozen dataclasses, validated on construction (ConfigError).

Times are seconds unless the name says ms. Every fault is off by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from engine.errors import ConfigError

#: Reasons a strict client rejects a frame for; ``corrupt_rate`` injects each of them.
REJECT_REASONS: tuple[str, ...] = (
    "not_json",
    "missing_field",
    "bad_type",
    "bad_price",
    "bad_qty",
    "unknown_symbol",
    "duplicate",
)

#: What revives a silenced stream (``FaultSettings.silent_until``).
SILENT_UNTIL: tuple[str, ...] = ("resubscribe", "reconnect")

DEFAULT_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")


def check_symbol(symbol: object) -> str:
    """An exchange symbol (uppercase letters and digits, e.g. BTCUSDT); ConfigError otherwise."""
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise ConfigError(
            f"bad symbol {symbol!r}: expected uppercase letters and digits such as 'BTCUSDT'"
        )
    return symbol


def _rate(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ConfigError(f"simulator fault {name} must be a fraction in [0, 1], got {value!r}")


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"simulator setting {name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class FaultSettings:
    """Fault injection switches (all off by default).

    - ``disconnect_every_s``: the server closes every websocket after this many seconds.
    - ``drop_rate``: fraction of trades not sent on the stream (still in history and REST).
    - ``corrupt_rate``: fraction of trades sent as a frame the client must reject; the kind
      cycles through ``corrupt_kinds``. ``duplicate`` re-sends an earlier valid frame in
      addition to the real trade; every other kind replaces the real trade's frame.
    - ``duplicate_rate``: fraction of trades followed by a re-send of an earlier valid frame.
    - ``silent_symbol``: this symbol's streams go quiet ``silent_after_s`` seconds after they
      were subscribed, until the client subscribes again or reconnects. With
      ``silent_until="reconnect"`` the stream is wedged on the exchange side: UNSUBSCRIBE and
      SUBSCRIBE do not revive it (the clock runs from its first subscription on the
      connection); only a new connection does.
    - ``slow_consumer_s``: every ``slow_every_s`` the server stops sending to each connection
      for this many seconds, then sends the backlog in a burst.
    - ``rest_429_every``: every N-th REST request is answered 429 with ``Retry-After``.
    """

    disconnect_every_s: float | None = None
    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    corrupt_kinds: tuple[str, ...] = REJECT_REASONS
    duplicate_rate: float = 0.0
    silent_symbol: str | None = None
    silent_after_s: float = 10.0
    silent_until: str = "resubscribe"
    slow_consumer_s: float = 0.0
    slow_every_s: float = 5.0
    rest_429_every: int = 0
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        _positive("disconnect_every_s", self.disconnect_every_s, allow_none=True)
        _rate("drop_rate", self.drop_rate)
        _rate("corrupt_rate", self.corrupt_rate)
        _rate("duplicate_rate", self.duplicate_rate)
        if self.drop_rate + self.corrupt_rate > 1.0:
            raise ConfigError("simulator faults drop_rate + corrupt_rate must not exceed 1")
        if not self.corrupt_kinds or not set(self.corrupt_kinds) <= set(REJECT_REASONS):
            raise ConfigError(
                f"simulator corrupt_kinds must be a non-empty subset of {list(REJECT_REASONS)}, "
                f"got {list(self.corrupt_kinds)!r}"
            )
        if self.silent_symbol is not None:
            check_symbol(self.silent_symbol)
        _positive("silent_after_s", self.silent_after_s)
        if self.silent_until not in SILENT_UNTIL:
            raise ConfigError(
                f"simulator silent_until must be one of {list(SILENT_UNTIL)}, "
                f"got {self.silent_until!r}"
            )
        if not (isinstance(self.slow_consumer_s, (int, float)) and self.slow_consumer_s >= 0):
            raise ConfigError(f"slow_consumer_s must be >= 0 seconds, got {self.slow_consumer_s!r}")
        _positive("slow_every_s", self.slow_every_s)
        if not (isinstance(self.rest_429_every, int) and self.rest_429_every >= 0):
            raise ConfigError(f"rest_429_every must be an int >= 0, got {self.rest_429_every!r}")
        if not (isinstance(self.retry_after_s, int) and self.retry_after_s >= 0):
            raise ConfigError(f"retry_after_s must be an int >= 0, got {self.retry_after_s!r}")


@dataclass(frozen=True)
class SimulatorSettings:
    """How the simulator serves and what it simulates.

    ``rate`` is the mean number of aggregate trades per second per symbol; ``groups`` lists
    groups of cointegrated symbols (the first of each group is its leader; default: the
    symbols in order, two by two); ``port`` 0 picks a free port; ``history_days``: days of
    market before the simulator started, served by REST and the public-data archive;
    ``listings``: symbol -> listing time (Unix ms), before which it has no trades and no files;
    ``history_s``: seconds before the start that ``Simulator.history()`` returns by default;
    ``rest_weight_limit`` (request weight per minute, None = off) answers 429 beyond it.
    """

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    seed: int = 0
    rate: float = 5.0
    host: str = "127.0.0.1"
    port: int = 0
    groups: tuple[tuple[str, ...], ...] | None = None
    faults: FaultSettings = field(default_factory=FaultSettings)
    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    max_lifetime_s: float = 86_400.0
    history_s: float = 0.0
    step_ms: int = 100
    max_streams: int = 1024
    max_incoming_per_s: int = 10
    rest_weight_limit: int | None = None
    history_days: float = 30.0
    listings: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        symbols = tuple(self.symbols)
        object.__setattr__(self, "symbols", symbols)
        if not symbols:
            raise ConfigError("simulator needs at least one symbol")
        for sym in symbols:
            check_symbol(sym)
        if len(set(symbols)) != len(symbols):
            raise ConfigError(f"simulator symbols repeat: {list(symbols)}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"simulator seed must be an int >= 0, got {self.seed!r}")
        rate = self.rate
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate >= 0):
            raise ConfigError(f"simulator rate must be >= 0 trades/s, got {self.rate!r}")
        if not (isinstance(self.port, int) and 0 <= self.port < 65536):
            raise ConfigError(f"simulator port must be in [0, 65535], got {self.port!r}")
        if self.groups is not None:
            groups = tuple(tuple(g) for g in self.groups)
            object.__setattr__(self, "groups", groups)
        if not isinstance(self.faults, FaultSettings):
            raise ConfigError(f"simulator faults must be FaultSettings, got {self.faults!r}")
        if self.faults.silent_symbol is not None and self.faults.silent_symbol not in symbols:
            raise ConfigError(
                f"silent_symbol {self.faults.silent_symbol!r} is not one of {list(symbols)}"
            )
        for name in ("ping_interval_s", "pong_timeout_s", "max_lifetime_s"):
            _positive(name, getattr(self, name))
        if not (isinstance(self.history_s, (int, float)) and self.history_s >= 0):
            raise ConfigError(f"simulator history_s must be >= 0, got {self.history_s!r}")
        for name in ("step_ms", "max_streams", "max_incoming_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ConfigError(f"simulator setting {name} must be a positive int, got {value!r}")
        days = self.history_days
        if not (isinstance(days, (int, float)) and math.isfinite(days) and days >= 0):
            raise ConfigError(f"simulator history_days must be >= 0 days, got {days!r}")
        if not isinstance(self.listings, Mapping):
            raise ConfigError(f"simulator listings must map symbol -> ms, got {self.listings!r}")
        for sym, ms in self.listings.items():
            if sym not in symbols:
                raise ConfigError(f"simulator listing {sym!r} is not one of {list(symbols)}")
            if not (isinstance(ms, int) and not isinstance(ms, bool) and ms >= 0):
                raise ConfigError(f"simulator listing time of {sym} must be Unix ms >= 0, "
                                  f"got {ms!r}")  # fmt: skip
        if self.rest_weight_limit is not None and not (
            isinstance(self.rest_weight_limit, int) and self.rest_weight_limit > 0
        ):
            raise ConfigError(
                f"rest_weight_limit must be a positive int or None, got {self.rest_weight_limit!r}"
            )

    @classmethod
    def from_config(cls, config: object, symbols: tuple[str, ...] | list[str]) -> SimulatorSettings:
        """Settings from the engine config's simulator section (``SimulatorConfig``).

        Attributes are read with getattr, so any object with (some of) ``seed, rate, host,
        port, groups, history_days, faults`` works; missing ones keep their defaults. ``faults``
        may carry ``disconnect_every_s, drop_rate, corrupt_rate, duplicate_rate, silent_symbol,
        slow_consumer`` (seconds of pause, or True for 1 s) and ``rest_429_every``.
        """
        kwargs: dict = {"symbols": tuple(symbols)}
        for name in ("seed", "rate", "host", "port", "groups", "history_days"):
            value = getattr(config, name, None)
            if value is not None:
                kwargs[name] = value
        faults_cfg = getattr(config, "faults", None)
        if faults_cfg is not None:
            fault_kwargs: dict = {}
            known = {f.name for f in fields(FaultSettings)}
            for name in known:
                value = getattr(faults_cfg, name, None)
                if value is not None:
                    fault_kwargs[name] = value
            slow = getattr(faults_cfg, "slow_consumer", None)
            if slow is not None and slow is not False:
                fault_kwargs["slow_consumer_s"] = 1.0 if slow is True else float(slow)
            if "corrupt_kinds" in fault_kwargs:
                fault_kwargs["corrupt_kinds"] = tuple(fault_kwargs["corrupt_kinds"])
            kwargs["faults"] = FaultSettings(**fault_kwargs)
        return cls(**kwargs)
