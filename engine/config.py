"""The YAML config: typed, frozen, validated msgspec structs (docs/semantics.md "Config").

``load_config(path)`` reads a file, ``parse_config(mapping, source)`` checks an already loaded
mapping; both return a root :class:`Config` or raise :class:`~engine.errors.ConfigError` naming
the file, the key path and what is wrong, e.g.
``config/demo.yaml: pairs[1].x: 'XRPUSDT' is not in symbols``. Unknown keys are errors.
Required: ``symbols``, ``pairs`` and ``feed.source``; everything else has the default that
docs/semantics.md gives.
A config that type-checks but could not run is refused too: windows longer than
``MAX_WINDOW_BARS``, a ``strategy.name`` not shaped as a strategy name (which class it names is
checked by ``strategies.check_config``: engine/ does not import strategies/), a ``store.path``
that is a file.

Defaults resolved at load time: ``feed.ws_url``/``rest_url`` become Binance's for
``source: binance`` (they stay ``None`` for ``simulator``: the engine points the feed at the
simulator it starts), and ``strategy.capital`` becomes ``strategy.notional`` when left out.

YAML is read by a subclass of ``yaml.SafeLoader`` (as safe as ``yaml.safe_load``) that also
reads ``1e-5`` as a float (YAML 1.2; plain PyYAML reads it as a string) and refuses duplicate
keys instead of keeping the last one silently.

Every struct is ``frozen`` and refuses unknown fields; checks that span fields live in
``__post_init__``, so building a struct in Python runs them too (as ``ValueError``). Range
checks (``msgspec.Meta``) run when a mapping is converted. Configs are picklable and
``Config.to_dict()`` gives plain builtins for Ray and the UI.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from engine.alerts import AlertRule
from engine.binance import REJECT_REASONS, SYMBOL_PATTERN
from engine.errors import ConfigError
from engine.schemas import TIMEFRAME_MS

__all__ = [
    "BINANCE_REST_URL",
    "BINANCE_WS_URL",
    "MAX_WINDOW_BARS",
    "STRATEGY_NAME_PATTERN",
    "AnalyticsConfig",
    "Config",
    "FaultsConfig",
    "FeedConfig",
    "KalmanConfig",
    "PairConfig",
    "RayConfig",
    "SimulatorConfig",
    "StoreConfig",
    "StrategyConfig",
    "load_config",
    "parse_config",
    "parse_section",
    "parse_simulator",
]

#: Binance USD-M routed websocket base (2026) and REST base, the defaults for source binance.
BINANCE_WS_URL = "wss://fstream.binance.com/market"
BINANCE_REST_URL = "https://fapi.binance.com"

Symbol = Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN)]
#: a bar timeframe: any of ``engine.schemas.TIMEFRAME_MS`` (1s, 1m ... 1d); the live feed's
#: ``BarBuilder`` builds every one of them from trades
Timeframe = Literal[tuple(TIMEFRAME_MS)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Bps = Annotated[float, msgspec.Meta(ge=0, lt=10_000)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
RejectReason = Literal[REJECT_REASONS]

#: the most bars an analytics window (``ols_window``, ``zscore_window``) may span: each window is
#: a ring buffer of float64 per pair (8 MB at this size) and warm-up loads 3 x the window of bars
MAX_WINDOW_BARS = 1_000_000
#: a window length in bars (2 .. MAX_WINDOW_BARS)
WindowBars = Annotated[int, msgspec.Meta(ge=2, le=MAX_WINDOW_BARS)]
#: the shape of ``strategy.name``: a built-in or registered strategy (a lowercase identifier
#: such as ``zscore``) or a class as ``package.module:ClassName``. Only the shape is checked
#: here (engine/ does not import strategies/); ``strategies.check_config`` resolves the name.
STRATEGY_NAME_PATTERN = re.compile(
    r"[a-z_][a-z0-9_]*|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
)


class _Struct(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config struct."""


def _invalid(key: str, reason: str) -> ValueError:
    """A ``__post_init__`` error; ``key`` is relative to the struct (joined to its path)."""
    return ValueError(f"{key}: {reason}")


class FeedConfig(_Struct, kw_only=True):
    """Market-data feed: where from, how many streams per connection, when bars close."""

    source: Literal["binance", "simulator"]
    ws_url: str | None = None
    rest_url: str | None = None
    #: "auto": sized from the cluster's CPUs (engine.sizing)
    symbols_per_connection: Annotated[int, msgspec.Meta(ge=1, le=1024)] | Literal["auto"] = "auto"
    funding: bool = True
    lateness_ms: Annotated[int, msgspec.Meta(ge=0)] = 250
    #: a stream silent this long (s) while others flow is resubscribed
    watchdog_s: PositiveFloat = 10.0
    #: reconnect before Binance's 24 h connection limit (hours)
    reconnect_after_h: Annotated[float, msgspec.Meta(gt=0, lt=24)] = 23.5

    def __post_init__(self) -> None:
        for key, url, schemes in (
            ("ws_url", self.ws_url, ("ws://", "wss://")),
            ("rest_url", self.rest_url, ("http://", "https://")),
        ):
            if url is not None and not url.startswith(schemes):
                raise _invalid(key, f"expected a {' or '.join(schemes)} URL, got {url!r}")
        if self.source == "binance":
            if self.ws_url is None:
                msgspec.structs.force_setattr(self, "ws_url", BINANCE_WS_URL)
            if self.rest_url is None:
                msgspec.structs.force_setattr(self, "rest_url", BINANCE_REST_URL)


class PairConfig(_Struct, kw_only=True):
    """A pair: ``y`` is hedged with ``x``."""

    y: Symbol
    x: Symbol

    def __post_init__(self) -> None:
        if self.y == self.x:
            raise _invalid("x", f"same symbol as y ({self.y!r})")

    @property
    def name(self) -> str:
        """The pair's name, "Y/X"."""
        return f"{self.y}/{self.x}"


class KalmanConfig(_Struct, kw_only=True):
    """Kalman hedge: state noise ``delta`` (Q = delta/(1-delta)·I), observation/prior variance."""

    delta: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1.0e-5
    obs_var: PositiveFloat = 1.0e-3
    init_var: PositiveFloat = 1.0


class AnalyticsConfig(_Struct, kw_only=True):
    """How pairs are stepped: bar timeframe, price transform, hedge and z-score."""

    timeframe: Timeframe = "1s"
    price: Literal["log", "raw"] = "log"
    hedge: Literal["kalman", "rolling_ols", "static_ols"] = "kalman"
    kalman: KalmanConfig = msgspec.field(default_factory=KalmanConfig)
    ols_window: WindowBars = 300
    zscore: Literal["rolling", "innovation"] = "rolling"
    zscore_window: WindowBars = 60
    #: bars of ``timeframe`` loaded before going live (engine.warmup): "auto" is
    #: 3 x max(zscore_window, ols_window) (at most MAX_WINDOW_BARS); 0: no warm-up
    warmup_bars: Annotated[int, msgspec.Meta(ge=0, le=MAX_WINDOW_BARS)] | Literal["auto"] = "auto"
    #: bars a leg's last close may be carried forward over bars of the other leg only
    #: (engine.align): older, the pair does not step on that bar; "auto": a per-timeframe
    #: default (engine.align.AUTO_MAX_CARRY, e.g. 60 for 1s, 30 for 1m, 2 for 1d)
    max_carry: Annotated[int, msgspec.Meta(ge=0)] | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        if self.zscore == "innovation" and self.hedge != "kalman":
            raise _invalid("zscore", f"'innovation' needs hedge 'kalman', got hedge {self.hedge!r}")
        n = self.warmup_bars
        if n != "auto" and (isinstance(n, bool) or not isinstance(n, int)
                            or not 0 <= n <= MAX_WINDOW_BARS):  # fmt: skip
            raise _invalid("warmup_bars", f"expected 'auto' or an int in 0..{MAX_WINDOW_BARS},"
                           f" got {n!r}")  # fmt: skip

    @property
    def warmup_bar_count(self) -> int:
        """Bars loaded before going live: ``warmup_bars`` with "auto" resolved."""
        if self.warmup_bars == "auto":
            return min(3 * max(self.zscore_window, self.ols_window), MAX_WINDOW_BARS)
        return int(self.warmup_bars)


class StrategyConfig(_Struct, kw_only=True):
    """Signal thresholds (z units), sizing (USDT) and costs (bps); ``capital`` defaults to notional.

    ``max_hold_half_lives``: a time stop after this many spread half-lives (None: off).
    ``sizing``: ``fixed`` (``notional`` USDT on the y leg) or ``vol`` (the y leg sized so that
    the position's per-bar spread PnL has a standard deviation of ``vol_target`` USDT, estimated
    over the past ``zscore_window`` bars). ``max_gross``: cap on an entry's gross exposure
    |qty_y|*fill_y + |qty_x|*fill_x in USDT (both legs scaled down to it; None: no cap).
    ``ruin_equity``: a fraction of capital in [0, 1); equity at a bar close at or below
    ruin_equity*capital ruins the run (position closed at the next open, no more trading).
    The one place where entry/exit/stop (and ``max_hold_half_lives``) are checked: the strategies
    (``strategies.make_strategy``) take a StrategyConfig and trust its thresholds.
    ``name``: a built-in or registered strategy, or ``package.module:ClassName``
    (``STRATEGY_NAME_PATTERN``); ``params``: the named strategy's own parameters, validated by
    the strategy class where it is built (a built-in strategy takes none).
    """

    name: str = "zscore"
    entry: PositiveFloat = 2.0
    exit: float = 0.0
    stop: PositiveFloat | None = 4.0
    notional: PositiveFloat = 10_000.0
    capital: PositiveFloat | None = None
    fee_bps: Bps = 5.0
    slippage_bps: Bps = 1.0
    max_hold_half_lives: PositiveFloat | None = None
    sizing: Literal["fixed", "vol"] = "fixed"
    vol_target: PositiveFloat | None = None
    max_gross: PositiveFloat | None = None
    ruin_equity: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    params: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and STRATEGY_NAME_PATTERN.fullmatch(self.name)):
            raise _invalid(
                "name",
                "expected a strategy name (a lowercase identifier such as zscore, built in or "
                "registered under the entry point group pairstack.strategies) or a class as "
                f"package.module:ClassName, got {self.name!r}",
            )
        # Python-built structs skip the msgspec.Meta range checks, so the thresholds are
        # checked here in full (finite too: a stop of +inf is written null)
        if not (math.isfinite(self.entry) and self.entry > 0):
            raise _invalid("entry", f"expected a positive finite number, got {self.entry}")
        if not (math.isfinite(self.exit) and self.exit < self.entry):
            raise _invalid("exit", f"expected < entry ({self.entry}), got {self.exit}")
        if self.stop is not None and not (math.isfinite(self.stop) and self.stop > self.entry):
            raise _invalid("stop", f"expected > entry ({self.entry}) or null, got {self.stop}")
        hold = self.max_hold_half_lives
        if hold is not None and not (math.isfinite(hold) and hold > 0):
            raise _invalid(
                "max_hold_half_lives", f"expected a positive finite number or null, got {hold}"
            )
        if self.sizing not in ("fixed", "vol"):
            raise _invalid("sizing", f"expected 'fixed' or 'vol', got {self.sizing!r}")
        if self.sizing == "vol" and self.vol_target is None:
            raise _invalid("vol_target", "required by sizing: vol (USDT of spread PnL per bar)")
        for key in ("vol_target", "max_gross"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise _invalid(
                    key, f"expected a positive finite number (USDT) or null, got {value}"
                )
        if not (math.isfinite(self.ruin_equity) and 0.0 <= self.ruin_equity < 1.0):
            raise _invalid(
                "ruin_equity", f"expected a fraction of capital in [0, 1), got {self.ruin_equity}"
            )
        if self.capital is None:
            msgspec.structs.force_setattr(self, "capital", self.notional)


class StoreConfig(_Struct, kw_only=True):
    """Where the Parquet store lives: a directory, made when missing."""

    path: Annotated[str, msgspec.Meta(min_length=1)] = "data"

    def __post_init__(self) -> None:
        existing = Path(os.path.abspath(self.path))
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            what = "is" if str(existing) == os.path.abspath(self.path) else f"is under {existing},"
            raise _invalid(
                "path",
                f"expected a directory (made when missing), but {self.path!r} {what} an existing"
                " file; point store.path at a directory",
            )


class RayConfig(_Struct, kw_only=True):
    """Ray cluster address (None: a local cluster) and how many pairs one PairActor hosts
    ("auto": sized from the cluster's CPUs, engine.sizing)."""

    address: str | None = None
    pairs_per_actor: Annotated[int, msgspec.Meta(ge=1)] | Literal["auto"] = "auto"


class FaultsConfig(_Struct, kw_only=True):
    """Simulator fault switches, all off by default (rates are fractions of trades, 0..1).

    - ``disconnect_every_s``: the server closes every websocket after this many seconds.
    - ``drop_rate``: trades not sent on the stream (still in history and REST).
    - ``corrupt_rate``: trades sent as a frame a strict client rejects, the kind cycling
      through ``corrupt_kinds`` (reject reasons). ``duplicate`` re-sends an earlier valid frame
      besides the real trade; every other kind replaces the real trade's frame.
    - ``duplicate_rate``: trades followed by a re-send of an earlier valid frame.
    - ``silent_symbol``: its streams go quiet ``silent_after_s`` seconds after they were
      subscribed, until the client subscribes again (``silent_until: resubscribe``) or only
      until it reconnects (``reconnect``: wedged on the exchange side; the clock runs from the
      first subscription on the connection).
    - ``slow_consumer``: every ``slow_every_s`` the server stops sending to each connection for
      this many seconds (True: 1 s), then sends the backlog in a burst.
    - ``rest_429_every``: every N-th REST request is answered 429 with ``Retry-After:
      retry_after_s``.
    """

    disconnect_every_s: PositiveFloat | None = None
    drop_rate: Probability = 0.0
    corrupt_rate: Probability = 0.0
    corrupt_kinds: Annotated[tuple[RejectReason, ...], msgspec.Meta(min_length=1)] = REJECT_REASONS
    duplicate_rate: Probability = 0.0
    silent_symbol: Symbol | None = None
    silent_after_s: PositiveFloat = 10.0
    silent_until: Literal["resubscribe", "reconnect"] = "resubscribe"
    slow_consumer: bool | NonNegativeFloat = False
    slow_every_s: PositiveFloat = 5.0
    rest_429_every: Annotated[int, msgspec.Meta(ge=0)] = 0
    retry_after_s: Annotated[int, msgspec.Meta(ge=0)] = 1

    def __post_init__(self) -> None:
        total = self.drop_rate + self.corrupt_rate
        if total > 1.0:
            raise _invalid("corrupt_rate", f"drop_rate + corrupt_rate must be <= 1, got {total}")

    @property
    def slow_consumer_s(self) -> float:
        """Seconds of each slow-consumer pause (0: off)."""
        if isinstance(self.slow_consumer, bool):
            return 1.0 if self.slow_consumer else 0.0
        return float(self.slow_consumer)

    @property
    def enabled(self) -> bool:
        """Whether any fault is switched on."""
        return bool(
            self.disconnect_every_s is not None
            or self.drop_rate > 0
            or self.corrupt_rate > 0
            or self.duplicate_rate > 0
            or self.silent_symbol is not None
            or self.slow_consumer_s > 0
            or self.rest_429_every > 0
        )


class SimulatorConfig(_Struct, kw_only=True):
    """The local exchange simulator (used when ``feed.source`` is ``simulator``, and by
    ``pairstack sim``); ``engine.simulator.Simulator(config, symbols)`` takes it as it is.

    ``rate``: mean aggregate trades/s per symbol; ``port`` 0 picks a free port; ``groups``:
    cointegrated groups of symbols, each symbol in exactly one group, the first of a group its
    leader (None: the simulator forms its own from the symbols). The market is a function of
    (``seed``, wall time): ``history_days`` of past before the start are served by REST and the
    public-data archive (``/data/futures/um/...``); ``listings`` maps a symbol to its listing
    time (Unix ms), before which it has no trades and no archive files; ``history_s``: seconds
    before the start that ``Simulator.history()`` returns by default (test checks; REST serves
    all ``history_days``). Binance's limits as served: server ping every ``ping_interval_s``, a
    client silent ``pong_timeout_s`` is dropped, connections live ``max_lifetime_s``, at most
    ``max_streams`` streams and ``max_incoming_per_s`` messages/s per connection,
    ``rest_weight_limit`` request weight per minute (None: off) before 429s. ``step_ms``: how
    often the live stream publishes the trades of the elapsed span (the trades themselves do
    not depend on it).
    """

    seed: Annotated[int, msgspec.Meta(ge=0)] = 7
    rate: NonNegativeFloat = 5.0
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    groups: tuple[Annotated[tuple[Symbol, ...], msgspec.Meta(min_length=1)], ...] | None = None
    history_days: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    listings: dict[Symbol, Any] = msgspec.field(default_factory=dict)
    faults: FaultsConfig = msgspec.field(default_factory=FaultsConfig)
    history_s: NonNegativeFloat = 0.0
    ping_interval_s: PositiveFloat = 180.0
    pong_timeout_s: PositiveFloat = 600.0
    max_lifetime_s: PositiveFloat = 86_400.0
    step_ms: PositiveInt = 100
    max_streams: PositiveInt = 1024
    max_incoming_per_s: PositiveInt = 10
    rest_weight_limit: PositiveInt | None = None

    def __post_init__(self) -> None:
        for symbol, ms in self.listings.items():  # here, not in the type: the key in the path
            if isinstance(ms, bool) or not isinstance(ms, int) or ms < 0:
                raise _invalid(f"listings.{symbol}", f"expected Unix ms (an int >= 0), got {ms!r}")


def _duplicate(items: tuple, what: str) -> str | None:
    """``"what[i]: ... listed twice"`` for the first repeated item, else None."""
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        if item in seen:
            return f"{what}[{i}]: {item!r} is listed twice (first at {what}[{seen[item]}])"
        seen[item] = i
    return None


class Config(_Struct, kw_only=True):
    """The root config (docs/semantics.md "Config")."""

    feed: FeedConfig
    symbols: Annotated[tuple[Symbol, ...], msgspec.Meta(min_length=1)]
    timeframes: Annotated[tuple[Timeframe, ...], msgspec.Meta(min_length=1)] = ("1s", "1m", "5m")
    pairs: Annotated[tuple[PairConfig, ...], msgspec.Meta(min_length=1)]
    analytics: AnalyticsConfig = msgspec.field(default_factory=AnalyticsConfig)
    strategy: StrategyConfig = msgspec.field(default_factory=StrategyConfig)
    alerts: tuple[AlertRule, ...] = ()
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    ray: RayConfig = msgspec.field(default_factory=RayConfig)
    simulator: SimulatorConfig = msgspec.field(default_factory=SimulatorConfig)

    def __post_init__(self) -> None:
        problem = (
            _duplicate(self.symbols, "symbols")
            or _duplicate(self.timeframes, "timeframes")
            or _duplicate(self.pair_names, "pairs")
            or self._unknown_symbols()
        )
        if problem is None and self.analytics.timeframe not in self.timeframes:
            problem = (
                f"analytics.timeframe: {self.analytics.timeframe!r} is not in timeframes "
                f"{list(self.timeframes)}"
            )
        if problem is None:
            problem = next(
                (
                    f"alerts[{i}].pair: {rule.pair!r} is not a configured pair "
                    f"{list(self.pair_names)}"
                    for i, rule in enumerate(self.alerts)
                    if rule.pair not in self.pair_names
                ),
                None,
            )
        if problem is not None:
            raise ValueError(problem)

    def _unknown_symbols(self) -> str | None:
        known = set(self.symbols)
        refs = [
            (f"pairs[{i}].{leg}", getattr(p, leg))
            for i, p in enumerate(self.pairs)
            for leg in ("y", "x")
        ]
        groups = self.simulator.groups or ()
        refs += [
            (f"simulator.groups[{g}][{i}]", s)
            for g, group in enumerate(groups)
            for i, s in enumerate(group)
        ]
        refs.append(("simulator.faults.silent_symbol", self.simulator.faults.silent_symbol))
        refs += [(f"simulator.listings.{s}", s) for s in self.simulator.listings]
        for key, symbol in refs:
            if symbol is not None and symbol not in known:
                return f"{key}: {symbol!r} is not in symbols"
        if self.simulator.groups is None:
            return None
        grouped = [s for group in self.simulator.groups for s in group]
        twice = next((s for i, s in enumerate(grouped) if s in grouped[:i]), None)
        if twice is not None:
            return f"simulator.groups: {twice!r} is in more than one group"
        missing = [s for s in self.symbols if s not in grouped]
        if missing:
            return f"simulator.groups: every symbol must be in a group, missing {missing}"
        return None

    @property
    def pair_names(self) -> tuple[str, ...]:
        """Configured pairs as "Y/X" names, in order."""
        return tuple(p.name for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (dicts, tuples, str, numbers, None), e.g. for Ray or the UI."""
        return msgspec.to_builtins(self)


# ----------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-5`` as a float and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: let SafeLoader report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)

_AT = re.compile(r"^(?P<text>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_RELATIVE = re.compile(r"^(?P<key>[A-Za-z_][\w.\[\]]*): (?P<reason>.*)$", re.DOTALL)
_KEY_IN = re.compile(r"^.* - at `key` in `\$(?P<path>.*)`$", re.DOTALL)
_KEYED = re.compile(r"^Object (?P<what>contains unknown|missing required) field `(?P<key>[^`]*)`$")


def _join(path: str, key: str) -> str:
    if not path:
        return key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def _lookup(mapping: Any, path: str) -> tuple[bool, Any]:
    """``(found, value)`` at a key path such as ``pairs[1].x`` in the raw mapping."""
    value = mapping
    for name, index in _TOKEN.findall("." + path if path and path[0] != "[" else path):
        try:
            value = value[name] if name else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return False, None
    return True, value


def _literal_values(root: type, path: str) -> tuple | None:
    """The allowed values of the Literal field at ``path`` of ``root``, if it is one."""
    info: Any = msgspec.inspect.type_info(root)
    for name, index in _TOKEN.findall("." + path if path and path[0] != "[" else path):
        while isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        if name and isinstance(info, msgspec.inspect.StructType):
            info = next((f.type for f in info.fields if f.name == name), None)
        elif index and isinstance(info, msgspec.inspect.VarTupleType):
            info = info.item_type
        else:
            return None
    if isinstance(info, msgspec.inspect.UnionType):  # e.g. a positive int or "auto"
        literals = [t for t in info.types if isinstance(t, msgspec.inspect.LiteralType)]
        if literals and any(isinstance(t, msgspec.inspect.IntType) for t in info.types):
            return ("a whole number", *literals[0].values)
    return info.values if isinstance(info, msgspec.inspect.LiteralType) else None


def _describe(exc: msgspec.ValidationError, mapping: Mapping, root: type) -> tuple[str, str]:
    """``(key path, reason)`` from msgspec's message (``... - at `$.pairs[1].x```)."""
    text, path = str(exc), ""
    keys = _KEY_IN.match(text)
    if keys:  # "Expected `str` - at `key` in `$.feed`"
        if f"'{SYMBOL_PATTERN}'" in text:  # a mapping keyed by symbol
            return keys["path"].lstrip("."), "keys must be upper-case symbols such as BTCUSDT"
        return keys["path"].lstrip("."), "keys must be strings"
    match = _AT.match(text)
    if match:
        text, path = match["text"], match["path"].lstrip(".")
    keyed = _KEYED.match(text)
    if keyed:
        what = "unknown key" if keyed["what"].startswith("contains") else "required key missing"
        return _join(path, keyed["key"]), what
    relative = _RELATIVE.match(text)
    if relative:  # raised by a __post_init__: "key: reason"
        return _join(path, relative["key"]), relative["reason"]
    if text.startswith("Invalid enum value"):
        allowed = _literal_values(root, path)
        if allowed is not None:
            if allowed[0] == "a whole number":
                text = "Expected a whole number or " + " or ".join(repr(v) for v in allowed[1:])
            else:
                text = "Expected one of " + ", ".join(repr(v) for v in allowed)
    elif f"'{SYMBOL_PATTERN}'" in text:
        text = "Expected an upper-case symbol such as BTCUSDT"
    if text.startswith("Expected"):  # msgspec names the type found; show the value instead
        found, value = _lookup(mapping, path)
        if found:
            text = re.sub(r", got `\w+`$", "", text) + f", got {value!r}"
    text = text.replace("`array`", "list").replace("`object`", "mapping").replace("`", "")
    return path, text[0].lower() + text[1:]


def _convert(mapping: object, root: type, source: str, prefix: str = "") -> Any:
    """``mapping`` validated into ``root``; ConfigError names ``source`` (when not empty), the
    key path (below ``prefix``), why."""
    if not isinstance(mapping, Mapping):
        got = "nothing (empty document)" if mapping is None else type(mapping).__name__
        raise ConfigError(f"{source}: expected a mapping at the top level, got {got}")
    try:
        return msgspec.convert(mapping, root)
    except msgspec.ValidationError as exc:
        key, reason = _describe(exc, mapping, root)
        key = _join(prefix, key) if prefix else key
        raise ConfigError(": ".join(part for part in (source, key, reason) if part)) from None


def parse_config(mapping: object, source: str = "<config>") -> Config:
    """Validate a mapping (e.g. from YAML) into a :class:`Config`; ConfigError names ``source``."""
    return _convert(mapping, Config, source)


def parse_section(mapping: object, section: type, source: str, key: str) -> Any:
    """Validate a mapping into the config section at ``key`` (e.g. ``StrategyConfig`` at
    "strategy"); ConfigError names ``source`` and the key path."""
    return _convert(mapping, section, source, key)


def parse_simulator(mapping: object, source: str = "simulator") -> SimulatorConfig:
    """Validate a mapping (the ``simulator`` section's keys, e.g. from ``pairstack sim``'s
    options) into a :class:`SimulatorConfig`; ConfigError names ``source`` and the key."""
    return _convert(mapping, SimulatorConfig, source)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; ConfigError names the file, key path and problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    try:
        mapping = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: YAML syntax error at {where}{problem}") from None
    return parse_config(mapping, source=str(path))
