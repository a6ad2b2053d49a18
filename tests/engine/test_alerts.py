"""Alert rules with hysteresis: one crossing fires once, re-arms after z comes back; the alert
log persists rules and history."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.alerts import AlertBook, AlertLog, AlertRule, rules_from_config
from engine.errors import ConfigError

PAIR = "ETHUSDT/BTCUSDT"


def oracle(kind: str, level: float, rearm: float, z: list[float]) -> list[int]:
    """Plain loop: indices where the rule fires."""
    armed, out = True, []
    for i, v in enumerate(z):
        if v != v:
            continue
        beyond = {"above": v > level, "below": v < level, "abs_above": abs(v) > level}[kind]
        back = {"above": v <= rearm, "below": v >= rearm, "abs_above": abs(v) <= rearm}[kind]
        if armed and beyond:
            armed = False
            out.append(i)
        elif not armed and back:
            armed = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("kind", "level", "rearm"),
    [
        ("above", 2.0, None),
        ("above", 2.0, 1.0),
        ("below", -2.0, None),
        ("below", -1.5, -0.5),
        ("abs_above", 2.0, None),
        ("abs_above", 2.5, 1.0),
    ],
)
def test_rule_fires_like_the_loop(seed, kind, level, rearm):
    rng = np.random.default_rng(seed)
    z = 2.8 * np.sin(np.arange(500) / 15.0) + rng.normal(0, 0.4, 500)
    z[rng.random(500) < 0.05] = np.nan
    book = AlertBook()
    rule = AlertRule(PAIR, kind, level, rearm)
    book.set_rules([rule, AlertRule("SOLUSDT/BNBUSDT", "above", -10.0)])
    fired = [i for i, v in enumerate(z) for _ in book.check(PAIR, 1000 * i, float(v))]
    expected = oracle(kind, level, level if rearm is None else rearm, list(z))
    assert fired == expected
    assert len(expected) >= 2  # the grid exercises re-arming


def test_one_crossing_fires_once_and_event_fields():
    book = AlertBook()
    book.set_rules([AlertRule(PAIR, "above", 2.0)])
    events = [book.check(PAIR, ts, z) for ts, z in enumerate([0.0, 2.5, 3.0, 2.1, 1.9, 2.2])]
    assert [len(e) for e in events] == [0, 1, 0, 0, 0, 1]
    ev = events[1][0]
    assert (ev.rule, ev.pair, ev.kind, ev.level, ev.ts, ev.z) == (
        "ETHUSDT/BTCUSDT above 2",
        PAIR,
        "above",
        2.0,
        1,
        2.5,
    )
    assert ev.to_dict()["z"] == 2.5


def test_set_rules_keeps_armed_state_of_kept_rules():
    book = AlertBook()
    rule = AlertRule(PAIR, "above", 2.0)
    book.set_rules([rule])
    assert book.check(PAIR, 0, 3.0)
    book.set_rules([rule, AlertRule(PAIR, "below", -2.0)])
    assert book.check(PAIR, 1, 3.0) == []  # still disarmed: same crossing
    assert book.check(PAIR, 2, math.nan) == []


def test_rules_from_config_structs_and_dicts():
    from engine.config import parse_config

    cfg = parse_config(
        {
            "feed": {"source": "simulator"},
            "symbols": ["ETHUSDT", "BTCUSDT"],
            "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
            "alerts": [
                {"pair": PAIR, "above": 2.0},
                {"pair": PAIR, "below": -2.0},
                {"pair": PAIR, "abs_above": 3.0},
            ],
        }
    )
    rules = rules_from_config(cfg.alerts)
    assert [(r.kind, r.level) for r in rules] == [
        ("above", 2.0),
        ("below", -2.0),
        ("abs_above", 3.0),
    ]
    assert rules_from_config([{"pair": PAIR, "kind": "above", "level": 1}]) == [
        AlertRule(PAIR, "above", 1.0)
    ]
    assert AlertRule.from_dict(rules[0].to_dict()) == rules[0]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: AlertRule(PAIR, "sideways", 1.0), "kind"),
        (lambda: AlertRule("ETHUSDT", "above", 1.0), "Y/X"),
        (lambda: AlertRule(PAIR, "above", math.nan), "finite"),
        (lambda: AlertRule(PAIR, "abs_above", -1.0), ">= 0"),
        (lambda: AlertRule(PAIR, "above", 2.0, rearm=3.0), "inner side"),
        (lambda: AlertRule(PAIR, "below", -2.0, rearm=-3.0), "inner side"),
        (lambda: AlertRule(PAIR, "above", 2.0, rearm=math.inf), "finite"),
        (lambda: AlertRule.from_dict({"pair": PAIR, "above": 1, "below": -1}), "exactly one"),
        (lambda: AlertRule.from_dict({"pair": PAIR}), "exactly one"),
        (lambda: AlertRule.from_dict({"pair": PAIR, "above": 1, "colour": "red"}), "exactly one"),
        (
            lambda: AlertRule.from_dict({"pair": PAIR, "kind": "above", "level": 1, "x": 0}),
            "unknown",
        ),
    ],
)
def test_bad_rules_are_refused(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_alert_log_survives_restart(tmp_path):
    default = [AlertRule(PAIR, "above", 2.0)]
    log = AlertLog(tmp_path, default)
    assert log.rules == default
    log.set_rules([*default, AlertRule(PAIR, "below", -2.0), AlertRule(PAIR, "below", -2.0)])
    events = [{"rule": "r", "pair": PAIR, "kind": "above", "level": 2.0, "ts": i, "z": 2.5,
               "fired_at": 100 + i} for i in range(3)]  # fmt: skip
    assert log.record(events) == events
    assert log.record([*events[1:], {**events[0], "ts": 9}]) == [{**events[0], "ts": 9}]
    events.append({**events[0], "ts": 9})
    again = AlertLog(tmp_path, [])
    assert again.rules == [default[0], AlertRule(PAIR, "below", -2.0)]
    assert again.history == events
    assert again.since(101) == events[2:3]
    assert not [p for p in (tmp_path / "alerts").iterdir() if p.name.startswith(".")]
