"""Plug-in strategies: ``strategy.name`` resolved to a built-in, an entry point of the group
``pairstack.strategies`` or ``package.module:Class``; ``strategy.params`` validated into the
class's ``params_type``; the worked example of docs/strategies.md against a plain-Python loop
written from its text; refusals at config load as a user meets them (a fresh shell)."""

from __future__ import annotations

import math
import subprocess
import textwrap

import msgspec
import numpy as np
import pytest
from cli_env import pairstack, scrubbed_env
from plugin_example import forget_example, write_dist_info, write_example

from engine.config import StrategyConfig
from engine.errors import ConfigError
from strategies import REGISTRY, check_config, make_strategy, registered, resolve
from strategies.zscore import ZScoreStrategy

CLASS = "my_strategies.cooldown:Cooldown"


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The docs example package written to a directory on sys.path (not installed)."""
    write_example(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    forget_example()


def cooldown_reference(z, entry, exit_, stop, cooldown_bars):
    """docs/strategies.md "a cooldown after each exit", read literally: the zscore rules of
    docs/semantics.md, and after a bar that closes a position no entry for the next
    ``cooldown_bars`` bars (every bar counts, whatever its z)."""
    pos, blocked, wait, out = 0, False, 0, []
    for v in z:
        if pos == 0 and wait > 0:  # cooling down: the bar counts; a stop's block may still lift
            wait -= 1
            if blocked and not math.isnan(v) and abs(v) < entry:
                blocked = False
            out.append(0)
            continue
        if not math.isnan(v):
            if pos != 0:
                if (v >= -exit_) if pos == 1 else (v <= exit_):
                    pos, wait = 0, cooldown_bars
                elif abs(v) > stop:
                    pos, blocked, wait = 0, True, cooldown_bars
            else:
                if blocked and abs(v) < entry:
                    blocked = False
                if not blocked:
                    if entry < v <= stop:
                        pos = -1
                    elif -stop <= v < -entry:
                        pos = 1
        out.append(pos)
    return np.array(out, dtype=np.int8)


def z_series(n, seed):
    rng = np.random.default_rng(seed)
    z = np.empty(n)
    z[0] = 0.0
    for i in range(1, n):
        z[i] = 0.85 * z[i - 1] + rng.normal(0.0, 1.3)
    z[:20] = np.nan
    z[rng.random(n) < 0.03] = np.nan
    return z


# ----------------------------------------------------------------------------- resolution


def test_built_in_names_resolve_first():
    for name, cls in REGISTRY.items():
        assert resolve(name) is cls
    assert isinstance(make_strategy(StrategyConfig(name="zscore")), ZScoreStrategy)


def test_module_class_resolves(example):
    from my_strategies.cooldown import Cooldown

    assert resolve(CLASS) is Cooldown
    strat = make_strategy(StrategyConfig(name=CLASS, params={"cooldown_bars": 7}))
    assert isinstance(strat, Cooldown) and strat.params.cooldown_bars == 7
    assert strat.kernel_args() == (2.0, 0.0, 4.0, 7)
    # the params_type's default applies when params are left out
    assert make_strategy(StrategyConfig(name=CLASS)).params.cooldown_bars == 5


def test_entry_point_registration(example):
    """The pyproject.toml of the docs, "installed" as pip leaves it: a dist-info on sys.path."""
    assert "cooldown" not in registered()
    write_dist_info(example)
    from my_strategies.cooldown import Cooldown

    assert registered()["cooldown"].value == CLASS
    assert resolve("cooldown") is Cooldown
    config = StrategyConfig(name="cooldown", params={"cooldown_bars": 3})
    check_config(config, "cfg.yaml")
    assert make_strategy(config).params.cooldown_bars == 3
    # an unknown name lists the built-in and the registered ones
    with pytest.raises(ConfigError) as info:
        resolve("cooldwn")
    assert str(info.value) == (
        "strategy.name: unknown strategy 'cooldwn'; expected a built-in one "
        "['zscore', 'zscore_timestop'], one registered under pairstack.strategies ['cooldown'], "
        "or a class as package.module:ClassName"
    )


def test_a_name_registered_twice_is_refused(example):
    write_dist_info(example)
    other = example / "other"
    other.mkdir()
    dist = other / "other_strategies-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: other-strategies\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pairstack.strategies]\ncooldown = other:Cooldown\n")
    import sys

    sys.path.append(str(other))
    try:
        with pytest.raises(ConfigError, match="'cooldown' is registered twice"):
            resolve("cooldown")
    finally:
        sys.path.remove(str(other))


def write_module(root, name, text):
    (root / f"{name}.py").write_text(textwrap.dedent(text))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "os:system",
            "strategy.name: os:system is not a pairstack Strategy class (expected a subclass "
            "of strategies.Strategy)",
        ),
        (
            "collections:OrderedDict",
            "strategy.name: collections:OrderedDict is not a pairstack Strategy class",
        ),
        ("strategies.base:Strategy", "strategy.name: strategies.base:Strategy is not a pairstack "
         "Strategy class"),
        (
            "nosuch.module:X",
            "strategy.name: cannot import module 'nosuch.module' for nosuch.module:X: "
            "ModuleNotFoundError: No module named 'nosuch'; install the package or put it on "
            "PYTHONPATH",
        ),
        ("os:nothing_here", "strategy.name: module 'os' has no 'nothing_here' (from "
         "os:nothing_here)"),
        ("plugin_broken:X", "strategy.name: cannot import module 'plugin_broken' for "
         "plugin_broken:X: RuntimeError: broken on import"),
        ("plugin_partial:NoKernel", "strategy.name: plugin_partial:NoKernel has no step kernel"),
        ("plugin_partial:NoState", "strategy.name: plugin_partial:NoState has no initial_state"),
        ("plugin_partial:LooseParams", "strategy.name: plugin_partial:LooseParams has a "
         "params_type that is not a msgspec Struct with forbid_unknown_fields=True"),
        ("momentum", "strategy.name: unknown strategy 'momentum'; expected a built-in one "
         "['zscore', 'zscore_timestop']"),
    ],
)  # fmt: skip
def test_names_that_name_no_strategy_are_refused(tmp_path, monkeypatch, name, message):
    write_module(tmp_path, "plugin_broken", "raise RuntimeError('broken on import')\n")
    write_module(
        tmp_path,
        "plugin_partial",
        """
        import msgspec
        from numba import njit
        from strategies import Strategy

        @njit(cache=True)
        def k(state, z, spread, args):
            return 0

        class NoKernel(Strategy):
            name = "no_kernel"
            initial_state = (0.0,)

        class NoState(Strategy):
            name = "no_state"
            kernel = k

        class Loose(msgspec.Struct):
            a: int = 1

        class LooseParams(Strategy):
            name = "loose"
            initial_state = (0.0,)
            kernel = k
            params_type = Loose
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = StrategyConfig(name=name)
    with pytest.raises(ConfigError) as info:
        make_strategy(config)
    assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(ConfigError) as info:
        check_config(config, "cfg.yaml")
    assert str(info.value).startswith(f"cfg.yaml: {message}"), str(info.value)


# ----------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cooldown_bars": 0}, "strategy.params.cooldown_bars: expected int >= 1, got 0"),
        ({"cooldown_bars": 2.5}, "strategy.params.cooldown_bars: expected int, got 2.5"),
        ({"cooldown_bars": "5"}, "strategy.params.cooldown_bars: expected int, got '5'"),
        ({"cooldown": 5}, "strategy.params.cooldown: unknown key"),
    ],
)
def test_params_are_validated_with_their_key_path(example, params, message):
    config = StrategyConfig(name=CLASS, params=params)
    with pytest.raises(ConfigError) as info:
        make_strategy(config)
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:
        check_config(config, "cfg.yaml")
    assert str(info.value) == f"cfg.yaml: {message}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_built_in_strategies_take_no_params(name):
    config = StrategyConfig(name=name, max_hold_half_lives=2.0, params={"lookback": 5})
    with pytest.raises(ConfigError) as info:
        make_strategy(config)
    assert str(info.value).startswith(
        f"strategy.params: {name} takes no params, got ['lookback']"
    )


# ----------------------------------------------------------------------------- the example


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("entry", "exit_", "stop", "bars"), [(1.0, 0.0, 2.5, 4), (1.5, 0.3, 3.0, 1)]
)
def test_cooldown_example_matches_its_description(example, seed, entry, exit_, stop, bars):
    z = z_series(2000, seed)
    config = StrategyConfig(
        name=CLASS, entry=entry, exit=exit_, stop=stop, params={"cooldown_bars": bars}
    )
    want = cooldown_reference(z, entry, exit_, stop, bars)
    np.testing.assert_array_equal(make_strategy(config).run(z), want)
    # the cooldown binds on this series: zscore alone re-enters sooner
    zscore = make_strategy(StrategyConfig(name="zscore", entry=entry, exit=exit_, stop=stop))
    assert not np.array_equal(zscore.run(z), want)
    # live, one bar at a time, and many pairs per call decide exactly alike
    stepped = make_strategy(config)
    np.testing.assert_array_equal([stepped.step(v) for v in z], want)
    bank = make_strategy(config)
    states = bank.new_states(3)
    got = np.stack(
        [bank.step_many(states, np.full(3, v), np.zeros(3), np.ones(3, bool)) for v in z]
    )
    np.testing.assert_array_equal(got, np.repeat(want[:, None], 3, axis=1))


# ----------------------------------------------------------------------------- the CLI

BASE_YAML = """\
feed: {source: simulator}
symbols: [ETHUSDT, BTCUSDT]
pairs: [{y: ETHUSDT, x: BTCUSDT}]
store: {path: %s}
"""


@pytest.mark.parametrize(
    ("verb", "strategy", "message"),
    [
        (
            "run",
            "{name: os.system}",
            "strategy.name: expected a strategy name (a lowercase identifier such as zscore",
        ),
        (
            "run",
            "{name: 'os:system'}",
            "strategy.name: os:system is not a pairstack Strategy class (expected a subclass of "
            "strategies.Strategy)",
        ),
        (
            "run",
            "{name: 'nosuch.module:X'}",
            "strategy.name: cannot import module 'nosuch.module' for nosuch.module:X",
        ),
        (
            "run",
            "{name: nosuch}",
            "strategy.name: unknown strategy 'nosuch'; expected a built-in one",
        ),
        (
            "backtest",
            "{name: 'my_strategies.cooldown:Cooldown', params: {cooldown_bars: 0}}",
            "strategy.params.cooldown_bars: expected int >= 1, got 0",
        ),
        (
            "run",
            "{name: zscore, params: {cooldown_bars: 5}}",
            "strategy.params: zscore takes no params, got ['cooldown_bars']",
        ),
    ],
)
def test_cli_refuses_before_anything_starts(tmp_path, verb, strategy, message):
    """A fresh shell (PATH, HOME and PYTHONPATH for the example): exit 2, one line naming the
    file and key, no traceback, nothing started (Ray says so on stderr when it starts)."""
    write_example(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(BASE_YAML % (tmp_path / "data") + f"strategy: {strategy}\n")
    args = ["--config", str(cfg)]
    if verb == "backtest":
        args += ["--pair", "ETHUSDT/BTCUSDT"]
    proc = subprocess.run(
        pairstack(verb, *args),
        cwd=tmp_path,
        env={**scrubbed_env(tmp_path / "home"), "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback, no Ray start-up lines
    assert lines[0].startswith(f"pairstack {verb}: error: {cfg}: {message}"), lines[0]
    assert not (tmp_path / "data").exists()  # the store was never opened


# ----------------------------------------------------------------------------- live


@pytest.mark.parametrize("seed", [0, 5])
def test_plugin_live_equals_batch(example, seed):
    """A PairBook (what a PairActor steps live, ``step_many`` over its pairs) with the plug-in
    gives exactly the positions of the batch pair step + ``Strategy.run`` over the same bars."""
    from engine.pairbook import PairBook, parse_pair
    from tests.engine.test_pairbook import PAIRS, batch_oracle, deliver, legs, make_config

    base = make_config("rolling_ols", "rolling", "log")
    strategy = msgspec.structs.replace(base.strategy, name=CLASS, params={"cooldown_bars": 3})
    cfg = msgspec.structs.replace(base, strategy=strategy)
    bars = legs(seed)
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 2000
    book = PairBook(cfg.analytics, make_strategy(cfg.strategy), PAIRS)
    deliver(book, bars, np.arange(t0, t1 + 5000, 370), {"ETHUSDT": 0, "BTCUSDT": 900, "SOLUSDT": 0})
    for pair in PAIRS:
        y, x = parse_pair(pair)
        _, series, _, pos = batch_oracle(cfg, bars[y], bars[x])
        np.testing.assert_array_equal(book.snapshot(pair)["position"], pos)
        assert np.any(pos != 0)
        want = cooldown_reference(series.z, cfg.strategy.entry, 0.0, cfg.strategy.stop, 3)
        np.testing.assert_array_equal(pos, want)


# ----------------------------------------------------------------------------- other entry points


def _bad_strategy_config(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        BASE_YAML % (tmp_path / "data") + "strategy: {name: 'nosuch.module:X'}\n"
    )
    return path


def test_start_engine_refuses_before_ray_starts(tmp_path, monkeypatch):
    import actors.engine as engine_mod
    from engine.config import load_config

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a config that cannot run")

    monkeypatch.setattr(engine_mod, "init_ray", no_ray)
    config = load_config(_bad_strategy_config(tmp_path))
    with pytest.raises(ConfigError, match=r"^strategy\.name: cannot import module 'nosuch\."):
        engine_mod.start_engine(config)


def test_dashboard_refuses_before_ray_starts(tmp_path, monkeypatch):
    import ui.server as server

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a config that cannot run")

    path = _bad_strategy_config(tmp_path)
    monkeypatch.setattr(server, "init_ray", no_ray)
    monkeypatch.setenv("PAIRSTACK_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        server.start_server_state()
    assert str(info.value).startswith(f"{path}: strategy.name: cannot import module")
