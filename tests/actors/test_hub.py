"""The Hub: alert rules from the config, changed at run time, persisted (without Ray); pairs
added at run time to a PairActor, kept over a PairActor and a Hub restart (real Ray)."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest

from actors.hub import Hub
from actors.pair import PairActor
from engine.alerts import AlertRule
from engine.errors import ConfigError
from engine.runtime_pairs import added_path
from tests.actors.test_pair_checkpoint import config, store_bars
from tests.engine.test_pairbook import PAIRS, legs, new_book

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


def test_pairs_added_at_run_time_survive_a_pair_actor_and_hub_restart(ray_cluster, tmp_path):
    ray = ray_cluster
    cfg = config(tmp_path)
    bars = legs(4)
    store_bars(tmp_path, bars)
    ns = f"hub-test-{uuid.uuid4().hex[:8]}"
    name = f"{ns}.pairs-0"
    actor = (
        ray.remote(PairActor)
        .options(name=name, namespace=ns, max_restarts=-1, max_task_retries=-1)
        .remote(cfg.to_dict(), PAIRS, name=name)
    )
    hub = (
        ray.remote(Hub)
        .options(namespace=ns, max_concurrency=8)
        .remote(cfg.to_dict(), str(tmp_path), pair_actors={name: PAIRS}, namespace=ns)
    )
    new = "SOLUSDT/ETHUSDT"
    assert ray.get(hub.add_pairs.remote([new, PAIRS[0]])) == [new]
    assert ray.get(hub.pairs.remote()) == sorted([*PAIRS, new])
    assert new in [row["pair"] for row in ray.get(hub.status.remote())["pairs"]]
    assert json.loads(added_path(tmp_path).read_text()) == {name: [new]}
    # a book built with the pair from the start over the same stored bars: the same steps
    whole = PairActor(cfg.to_dict(), [*PAIRS, new])
    before = ray.get(hub.snapshot.remote(new))
    for key, col in whole.snapshot(new).items():
        np.testing.assert_array_equal(before[key], col, err_msg=key)
    with pytest.raises(ray.exceptions.RayTaskError, match="no pair actor is fed both legs"):
        ray.get(hub.add_pairs.remote(["XRPUSDT/BTCUSDT"]))
    ray.kill(actor, no_restart=False)  # Ray restarts it from its constructor arguments
    deadline = time.monotonic() + 120
    while True:
        try:
            after = ray.get(hub.snapshot.remote(new), timeout=60)
            break
        except ray.exceptions.RayError:
            assert time.monotonic() < deadline, "the PairActor did not come back"
            time.sleep(0.5)
    for key, col in before.items():
        np.testing.assert_array_equal(after[key], col, err_msg=key)
    # a restarted Hub (its constructor arguments only) knows the pair and where it runs
    again = Hub(cfg.to_dict(), str(tmp_path), pair_actors={name: PAIRS}, namespace=ns)
    assert again.pairs() == sorted([*PAIRS, new])
    np.testing.assert_array_equal(again.snapshot(new)["z"], before["z"])
    ray.kill(hub)
    ray.kill(actor, no_restart=True)


def test_pairs_added_to_an_actor_without_their_legs_are_refused(tmp_path):
    cfg = config(tmp_path)
    actor = PairActor(cfg.to_dict(), PAIRS[:1])
    with pytest.raises(ConfigError, match="SOLUSDT not fed to this pair actor"):
        actor.add_pairs(["SOLUSDT/BTCUSDT"])
    book = new_book(cfg, PAIRS[:1])
    assert book.add_pairs([PAIRS[0]]) == [] and book.names == PAIRS[:1]
