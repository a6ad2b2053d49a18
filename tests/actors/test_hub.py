"""The Hub without Ray: alert rules from the config, changed at run time, persisted."""

from __future__ import annotations

import pytest

from actors.hub import Hub
from engine.alerts import AlertRule

PAIR = "ETHUSDT/BTCUSDT"



def test_hub_rules_without_actors(tmp_path):
    from engine.config import parse_config

    cfg = parse_config(
        {
            "feed": {"source": "simulator"},
            "symbols": ["ETHUSDT", "BTCUSDT"],
            "pairs": [{"y": "ETHUSDT", "x": "BTCUSDT"}],
            "alerts": [{"pair": PAIR, "above": 2.0}],
            "store": {"path": str(tmp_path)},
        }
    )
    hub = Hub(cfg, tmp_path)
    assert hub.rules() == [AlertRule(PAIR, "above", 2.0)]
    hub.add_rule({"pair": PAIR, "below": -1.5})
    assert [r.key for r in hub.rules()] == [f"{PAIR} above 2", f"{PAIR} below -1.5"]
    hub.remove_rule(f"{PAIR} above 2")
    assert [r.key for r in Hub(cfg, tmp_path).rules()] == [f"{PAIR} below -1.5"]
    hub.record_alerts([{"rule": "x", "pair": PAIR, "kind": "below", "level": -1.5, "ts": 0,
                        "z": -2.0, "fired_at": 5}])  # fmt: skip
    assert hub.alerts(since=4)[0]["z"] == -2.0 and hub.alerts(since=5) == []
    with pytest.raises(KeyError, match="unknown pair"):
        hub.snapshot("A/B")
