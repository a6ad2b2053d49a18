"""engine.config: shipped files load, docs/semantics.md defaults, and every malformed config, or
one that type-checks but could not run, is refused with the file, the key path and the reason."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import msgspec
import numpy as np
import pytest
import yaml

from engine.config import (
    BINANCE_REST_URL,
    BINANCE_WS_URL,
    MAX_WINDOW_BARS,
    STRATEGY_NAME_PATTERN,
    Config,
    FaultsConfig,
    PairConfig,
    StrategyConfig,
    load_config,
    parse_config,
)
from engine.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "feed": {"source": "binance"},
    "symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
    "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}, {"y": "SOLUSDT", "x": "ETHUSDT"}],
}


def _with(**changes: object) -> dict:
    """MINIMAL with top-level keys replaced (None removes the key)."""
    out = copy.deepcopy(MINIMAL)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


def _feed(**changes: object) -> dict:
    feed = {"source": "binance", **changes}
    return _with(feed={k: v for k, v in feed.items() if v is not None})


# --------------------------------------------------------------------------- good configs


def test_pairs_yaml_is_the_design_example() -> None:
    cfg = load_config(ROOT / "config" / "pairs.yaml")
    assert cfg.feed.source == "binance"
    assert cfg.feed.ws_url == "wss://fstream.binance.com/market"
    assert cfg.feed.rest_url == "https://fapi.binance.com"
    assert cfg.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
    assert cfg.pairs[0] == PairConfig(y="ETHUSDT", x="BTCUSDT")
    assert cfg.pairs[0].name == "ETHUSDT/BTCUSDT"
    assert cfg.analytics.kalman.delta == 1.0e-5
    assert cfg.strategy.capital == 10_000.0
    assert [a.pair for a in cfg.alerts] == ["ETHUSDT/BTCUSDT", "ETHUSDT/BTCUSDT"]
    assert cfg.alerts[1].below == -2.0


def test_demo_yaml_runs_the_simulator() -> None:
    cfg = load_config(ROOT / "config" / "demo.yaml")
    assert cfg.feed.source == "simulator"
    assert cfg.feed.ws_url is None and cfg.feed.rest_url is None
    assert cfg.timeframes == ("1s", "1m", "5m")
    assert cfg.analytics.timeframe == "1s"
    assert 4 <= len(cfg.pairs) <= 6
    groups = cfg.simulator.groups
    assert groups is not None and len(groups) == 3
    assert sorted(s for g in groups for s in g) == sorted(cfg.symbols)
    for pair in cfg.pairs:  # every demo pair is drawn from one cointegrated group
        assert any(pair.y in g and pair.x in g for g in groups)
    assert 5.0 <= cfg.simulator.rate <= 10.0
    assert cfg.store.path == "data/demo"
    assert len(cfg.alerts) >= 2
    assert not cfg.simulator.faults.enabled


def test_defaults_are_the_design_values() -> None:
    cfg = parse_config(MINIMAL)
    assert msgspec.to_builtins(cfg.feed) == {
        "source": "binance",
        "ws_url": BINANCE_WS_URL,
        "rest_url": BINANCE_REST_URL,
        "symbols_per_connection": "auto",
        "funding": True,
        "lateness_ms": 250,
        "watchdog_s": 10.0,
        "reconnect_after_h": 23.5,
    }
    assert cfg.timeframes == ("1s", "1m", "5m")
    assert msgspec.to_builtins(cfg.analytics) == {
        "timeframe": "1s",
        "price": "log",
        "hedge": "kalman",
        "kalman": {"delta": 1.0e-5, "obs_var": 1.0e-3, "init_var": 1.0},
        "ols_window": 300,
        "zscore": "rolling",
        "zscore_window": 60,
        "warmup_bars": "auto",
        "max_carry": "auto",
    }
    assert msgspec.to_builtins(cfg.strategy) == {
        "name": "zscore",
        "entry": 2.0,
        "exit": 0.0,
        "stop": 4.0,
        "notional": 10_000.0,
        "capital": 10_000.0,
        "fee_bps": 5.0,
        "slippage_bps": 1.0,
        "max_hold_half_lives": None,
        "sizing": "fixed",
        "vol_target": None,
        "max_gross": None,
        "ruin_equity": 0.0,
        "params": {},
    }
    assert cfg.alerts == ()
    assert cfg.store.path == "data"
    assert (cfg.ray.address, cfg.ray.pairs_per_actor) == (None, "auto")
    sim = cfg.simulator
    assert (sim.seed, sim.rate, sim.host, sim.port, sim.groups) == (7, 5.0, "127.0.0.1", 0, None)
    assert sim.faults == FaultsConfig() and not sim.faults.enabled


@pytest.mark.parametrize(
    ("feed", "ws_url", "rest_url"),
    [
        ({"source": "binance"}, BINANCE_WS_URL, BINANCE_REST_URL),
        ({"source": "simulator"}, None, None),
        (
            {"source": "simulator", "ws_url": "ws://127.0.0.1:9000/market"},
            "ws://127.0.0.1:9000/market",
            None,
        ),
        (
            {"source": "binance", "rest_url": "http://127.0.0.1:1/"},
            BINANCE_WS_URL,
            "http://127.0.0.1:1/",
        ),
    ],
)
def test_feed_urls_default_by_source(feed: dict, ws_url: str | None, rest_url: str | None) -> None:
    cfg = parse_config(_with(feed=feed))
    assert (cfg.feed.ws_url, cfg.feed.rest_url) == (ws_url, rest_url)


@pytest.mark.parametrize(
    ("strategy", "capital"),
    [({}, 10_000.0), ({"notional": 500}, 500.0), ({"notional": 500, "capital": 2000}, 2000.0)],
)
def test_capital_defaults_to_notional(strategy: dict, capital: float) -> None:
    assert parse_config(_with(strategy=strategy)).strategy.capital == capital


def test_to_dict_round_trips_pickles_and_is_json() -> None:
    cfg = load_config(ROOT / "config" / "demo.yaml")
    as_dict = cfg.to_dict()
    assert as_dict["pairs"][0] == {"y": "ETHUSDT", "x": "BTCUSDT"}
    assert parse_config(as_dict) == cfg
    assert parse_config(json.loads(json.dumps(as_dict))) == cfg
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.pair_names == cfg.pair_names


def test_structs_are_frozen() -> None:
    cfg = parse_config(MINIMAL)
    with pytest.raises(AttributeError):
        cfg.feed.lateness_ms = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.symbols = ("BTCUSDT",)  # type: ignore[misc]


def test_yaml_reads_exponents_without_a_dot_as_floats(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "feed: {source: simulator}\nsymbols: [AAAUSDT, BBBUSDT]\n"
        "pairs: [{y: AAAUSDT, x: BBBUSDT}]\n"
        "analytics: {kalman: {delta: 1e-5, obs_var: 2E-3}}\n"
    )
    cfg = load_config(path)
    assert cfg.analytics.kalman.delta == 1e-5
    assert cfg.analytics.kalman.obs_var == 2e-3


def test_strategy_checks_run_when_built_in_python() -> None:
    assert StrategyConfig(notional=300.0).capital == 300.0
    with pytest.raises(ValueError, match="stop: expected > entry"):
        StrategyConfig(entry=2.0, stop=1.0)


def test_faults_enabled_by_any_switch() -> None:
    assert FaultsConfig(drop_rate=0.1).enabled
    assert FaultsConfig(slow_consumer=True).enabled
    assert not FaultsConfig().enabled


# --------------------------------------------------------------------------- bad configs

BAD = [
    pytest.param(_with(symbols=None), "symbols", "required key missing", id="no-symbols"),
    pytest.param(_with(pairs=None), "pairs", "required key missing", id="no-pairs"),
    pytest.param(_feed(source=None), "feed.source", "required key missing", id="no-source"),
    pytest.param(_with(feed=None), "feed", "required key missing", id="no-feed"),
    pytest.param(_feed(source="kraken"), "feed.source", "expected one of", id="bad-source"),
    pytest.param(_feed(lateness_ms=-5), "feed.lateness_ms", "expected int >= 0, got -5", id="late"),
    pytest.param(_feed(lateness_ms=1.5), "feed.lateness_ms", "expected int, got 1.5", id="late-f"),
    pytest.param(
        _feed(symbols_per_connection=2000),
        "feed.symbols_per_connection",
        "expected int <= 1024, got 2000",
        id="streams",
    ),
    pytest.param(_feed(funding="yes"), "feed.funding", "expected bool, got 'yes'", id="funding"),
    pytest.param(_feed(ws_url="http://x/market"), "feed.ws_url", "ws:// or wss://", id="ws-url"),
    pytest.param(_feed(reconnect_after_h=30), "feed.reconnect_after_h", "< 24", id="reconnect"),
    pytest.param(_feed(extra=1), "feed.extra", "unknown key", id="feed-unknown"),
    pytest.param(_with(colour="red"), "colour", "unknown key", id="root-unknown"),
    pytest.param(_with(analytics={"foo": 1}), "analytics.foo", "unknown key", id="analytics-foo"),
    pytest.param(_with(symbols=[]), "symbols", "length >= 1", id="symbols-empty"),
    pytest.param(_with(symbols="BTCUSDT"), "symbols", "expected list, got 'BTCUSDT'", id="sym-str"),
    pytest.param(
        _with(symbols=["BTCUSDT", "ethusdt", "SOLUSDT"]),
        "symbols[1]",
        "upper-case symbol",
        id="lower",
    ),
    pytest.param(
        _with(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDT"]),
        "symbols[3]",
        "'BTCUSDT' is listed twice",
        id="sym-twice",
    ),
    pytest.param(
        _with(pairs=[{"y": "ETHUSDT", "x": "BTCUSDT"}, {"y": "ETHUSDT", "x": "XRPUSDT"}]),
        "pairs[1].x",
        "'XRPUSDT' is not in symbols",
        id="pair-symbol",
    ),
    pytest.param(
        _with(pairs=[{"y": "BTCUSDT", "x": "BTCUSDT"}]), "pairs[0].x", "same symbol", id="y-is-x"
    ),
    pytest.param(
        _with(pairs=[{"y": "ETHUSDT", "x": "BTCUSDT"}, {"y": "ETHUSDT", "x": "BTCUSDT"}]),
        "pairs[1]",
        "'ETHUSDT/BTCUSDT' is listed twice",
        id="pair-twice",
    ),
    pytest.param(_with(pairs=[{"y": "ETHUSDT"}]), "pairs[0].x", "required", id="pair-no-x"),
    pytest.param(_with(pairs=[]), "pairs", "length >= 1", id="pairs-empty"),
    pytest.param(_with(timeframes=["1s", "1w"]), "timeframes[1]", "one of", id="timeframe"),
    pytest.param(
        _with(timeframes=["1m"]), "analytics.timeframe", "'1s' is not in timeframes", id="tf-in"
    ),
    pytest.param(_with(analytics={"price": "pct"}), "analytics.price", "'log'", id="price"),
    pytest.param(
        _with(analytics={"kalman": {"delta": 1.5}}),
        "analytics.kalman.delta",
        "expected float < 1.0, got 1.5",
        id="delta",
    ),
    pytest.param(
        _with(analytics={"kalman": {"obs_var": 0}}),
        "analytics.kalman.obs_var",
        "expected float > 0",
        id="obs-var",
    ),
    pytest.param(
        _with(analytics={"ols_window": 1}), "analytics.ols_window", "int >= 2", id="ols-window"
    ),
    pytest.param(
        _with(analytics={"hedge": "static_ols", "zscore": "innovation"}),
        "analytics.zscore",
        "needs hedge 'kalman'",
        id="innovation",
    ),
    pytest.param(_with(strategy={"entry": 0}), "strategy.entry", "float > 0", id="entry"),
    pytest.param(
        _with(strategy={"entry": 2.0, "stop": 1.5}), "strategy.stop", "> entry", id="stop"
    ),
    pytest.param(
        _with(strategy={"entry": 1.0, "exit": 1.0}), "strategy.exit", "< entry", id="exit"
    ),
    pytest.param(_with(strategy={"fee_bps": -1}), "strategy.fee_bps", ">= 0", id="fee"),
    pytest.param(_with(strategy={"notional": -5}), "strategy.notional", "> 0", id="notional"),
    pytest.param(
        _with(alerts=[{"pair": "ETHUSDT/BTCUSDT"}]), "alerts[0]", "got none", id="alert-none"
    ),
    pytest.param(
        _with(alerts=[{"pair": "ETHUSDT/BTCUSDT", "above": 2.0, "abs_above": 3.0}]),
        "alerts[0].abs_above",
        "only one of",
        id="alert-two",
    ),
    pytest.param(
        _with(alerts=[{"pair": "BTCUSDT/ETHUSDT", "above": 2.0}]),
        "alerts[0].pair",
        "not a configured pair",
        id="alert-pair",
    ),
    pytest.param(_with(ray={"pairs_per_actor": 0}), "ray.pairs_per_actor", ">= 1", id="ray"),
    pytest.param(_with(ray={"pairs_per_actor": "x"}), "ray.pairs_per_actor", "'auto'", id="auto"),
    pytest.param(_with(store={"path": ""}), "store.path", "length >= 1", id="store"),
    pytest.param(_with(simulator={"port": 70000}), "simulator.port", "<= 65535", id="port"),
    pytest.param(
        _with(simulator={"groups": [["BTCUSDT", "ETHUSDT"], ["SOLUSDT", "DOGEUSDT"]]}),
        "simulator.groups[1][1]",
        "'DOGEUSDT' is not in symbols",
        id="group-symbol",
    ),
    pytest.param(
        _with(simulator={"groups": [["BTCUSDT", "ETHUSDT"]]}),
        "simulator.groups",
        "missing ['SOLUSDT']",
        id="group-missing",
    ),
    pytest.param(
        _with(simulator={"faults": {"drop_rate": 1.5}}),
        "simulator.faults.drop_rate",
        "<= 1.0, got 1.5",
        id="drop-rate",
    ),
    pytest.param(
        _with(simulator={"faults": {"silent_symbol": "XRPUSDT"}}),
        "simulator.faults.silent_symbol",
        "not in symbols",
        id="silent",
    ),
    pytest.param(
        _with(simulator={"listings": {"SOLUSDT": 0, "XRPUSDT": 1_700_000_000_000}}),
        "simulator.listings.XRPUSDT",
        "'XRPUSDT' is not in symbols",
        id="listing-symbol",
    ),
    pytest.param(
        _with(simulator={"listings": {"SOLUSDT": -1}}),
        "simulator.listings.SOLUSDT",
        "expected Unix ms (an int >= 0), got -1",
        id="listing-ms",
    ),
    pytest.param(
        _with(simulator={"listings": {"solusdt": 0}}),
        "simulator.listings",
        "keys must be upper-case symbols",
        id="listing-key",
    ),
    pytest.param(
        _with(simulator={"history_days": -2}),
        "simulator.history_days",
        ">= 0",
        id="history-days",
    ),
    pytest.param(
        _with(simulator={"faults": {"explode": True}}),
        "simulator.faults.explode",
        "unknown key",
        id="fault-unknown",
    ),
]


@pytest.mark.parametrize(("mapping", "key", "reason"), BAD)
def test_bad_config_is_refused_with_key_path(mapping: dict, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(mapping, source="config/test.yaml")
    message = str(info.value)
    assert message.startswith(f"config/test.yaml: {key}: "), message
    assert reason in message, message


@pytest.mark.parametrize("mapping", [p.values[0] for p in BAD[:6]])
def test_bad_config_file_names_the_file(tmp_path: Path, mapping: dict) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(mapping))
    with pytest.raises(ConfigError, match=f"^{path}: "):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("feed: {source: binance\nsymbols: [A]\n", "YAML syntax error at line 2"),
        ("feed:\n  source: binance\n bad: 1\n", "YAML syntax error at line 3"),
        ("symbols: [BTCUSDT]\nsymbols: [ETHUSDT]\n", "duplicate key 'symbols'"),
        ("- feed\n- symbols\n", "expected a mapping at the top level, got list"),
        ("just text\n", "expected a mapping at the top level, got str"),
        ("", "expected a mapping at the top level, got nothing"),
        ("# only a comment\n", "got nothing"),
    ],
)
def test_bad_yaml_file(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert reason in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("mapping", "reason"),
    [({1: 2}, "keys must be strings"), (["feed"], "got list"), (None, "got nothing")],
)
def test_parse_config_refuses_non_mappings(mapping: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_config(mapping, source="<ui>")


def test_config_type_is_the_root() -> None:
    assert isinstance(parse_config(MINIMAL), Config)


# ------------------------------------------------- configs that type-check but cannot run

MINIMAL_YAML = """\
feed: {source: simulator}
symbols: [ETHUSDT, BTCUSDT]
pairs: [{y: ETHUSDT, x: BTCUSDT}]
"""


@pytest.mark.parametrize(
    ("extra", "key", "reason"),
    [
        pytest.param(  # beyond int64: numba would overflow
            "analytics: {zscore_window: 99999999999999999999999999999}",
            "analytics.zscore_window",
            f"expected int <= {MAX_WINDOW_BARS}, got 99999999999999999999999999999",
            id="zscore-window-beyond-int64",
        ),
        pytest.param(  # 2**40 bars: 8 TiB of ring buffer, MemoryError
            "analytics: {zscore_window: 1099511627776}",
            "analytics.zscore_window",
            f"expected int <= {MAX_WINDOW_BARS}, got 1099511627776",
            id="zscore-window-2**40",
        ),
        pytest.param(
            "analytics: {ols_window: 9223372036854775807}",
            "analytics.ols_window",
            f"expected int <= {MAX_WINDOW_BARS}, got 9223372036854775807",
            id="ols-window-int64-max",
        ),
        pytest.param(
            "analytics: {ols_window: 1000001}",
            "analytics.ols_window",
            "expected int <= 1000000, got 1000001",
            id="ols-window-max-plus-one",
        ),
        pytest.param(
            "strategy: {name: os.system}",
            "strategy.name",
            "expected a strategy name (a lowercase identifier such as zscore, built in or "
            "registered under the entry point group pairstack.strategies) or a class as "
            "package.module:ClassName, got 'os.system'",
            id="unknown-strategy",
        ),
        pytest.param(
            "strategy: {params: [1, 2]}",
            "strategy.params",
            "expected mapping, got [1, 2]",
            id="params-not-a-mapping",
        ),
    ],
)
def test_a_config_that_cannot_run_is_refused_at_load(
    tmp_path: Path, extra: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL_YAML + extra + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {key}: {reason}"


def test_the_largest_window_loads_and_runs() -> None:
    from engine.pairstep import PairParams, run_pair

    cfg = parse_config(
        _with(analytics={"ols_window": MAX_WINDOW_BARS, "zscore_window": MAX_WINDOW_BARS})
    )
    assert cfg.analytics.zscore_window == cfg.analytics.ols_window == 1_000_000
    params = PairParams.from_config(cfg.analytics)
    series = run_pair(np.linspace(1.0, 2.0, 50), np.linspace(2.0, 3.0, 50), params)
    assert np.isnan(series.z).all()  # the window never fills on 50 bars
    assert np.isfinite(series.beta).all()  # the Kalman hedge does not wait for a window


def test_strategy_names_are_the_registry() -> None:
    from strategies import REGISTRY

    for name in REGISTRY:
        assert STRATEGY_NAME_PATTERN.fullmatch(name)
        assert parse_config(_with(strategy={"name": name})).strategy.name == name


@pytest.mark.parametrize(
    ("name", "shaped"),
    [
        ("cooldown", True),
        ("my_strategies.cooldown:Cooldown", True),
        ("pkg:Cls", True),
        ("nosuch.module:X", True),
        ("os.system", False),
        ("Cooldown", False),
        ("my-strategy", False),
        ("pkg:", False),
        (":Cls", False),
        ("a..b:C", False),
        ("pkg:Cls.attr", False),
        ("", False),
    ],
)
def test_strategy_name_shape(name: str, shaped: bool) -> None:
    """Only the shape is checked at load: which class a name names is strategies' business."""
    if shaped:
        cfg = parse_config(_with(strategy={"name": name, "params": {"k": 1}}))
        assert (cfg.strategy.name, cfg.strategy.params) == (name, {"k": 1})
    else:
        with pytest.raises(ConfigError, match=r"^c\.yaml: strategy\.name: expected a strategy"):
            parse_config(_with(strategy={"name": name}), source="c.yaml")
        with pytest.raises(ValueError, match="name: expected a strategy name"):
            StrategyConfig(name=name)


def test_store_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "data.parquet"
    existing.write_bytes(b"PAR1")
    for store, what in (
        (existing, f"'{existing}' is an existing file"),
        (existing / "sub", f"is under {existing}, an existing file"),
    ):
        with pytest.raises(ConfigError) as info:
            parse_config(_with(store={"path": str(store)}), source="c.yaml")
        message = str(info.value)
        assert message.startswith("c.yaml: store.path: expected a directory"), message
        assert what in message, message
    # a directory, or one still to be made under a directory, is fine
    assert parse_config(_with(store={"path": str(tmp_path)})).store.path == str(tmp_path)
    fresh = tmp_path / "new" / "store"
    assert parse_config(_with(store={"path": str(fresh)})).store.path == str(fresh)
    assert not fresh.exists()  # loading never makes the directory


@pytest.mark.parametrize("value", [-1, 1.5, True, "never"])
def test_max_carry_refuses_what_is_not_a_bar_count(value) -> None:
    with pytest.raises(ConfigError, match="max_carry"):
        parse_config(
        {"feed": {"source": "simulator"}, "symbols": ["ETHUSDT", "BTCUSDT"],
         "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
         "analytics": {"max_carry": value}}
    )


@pytest.mark.parametrize("value", [0, 7, "auto"])
def test_max_carry_takes_bars_or_auto(value) -> None:
    cfg = parse_config(
        {"feed": {"source": "simulator"}, "symbols": ["ETHUSDT", "BTCUSDT"],
         "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
         "analytics": {"max_carry": value}}
    )
    assert cfg.analytics.max_carry == value
