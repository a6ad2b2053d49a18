"""The Publisher against real PairActors on Ray: packets go by lane once it is open, by call
before and after a PairActor restart until the restarted actor's lane is open, and by call
only where the lane cannot be reached; in every case the book ends as one fed everything."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest

from actors.pair import PairActor
from actors.publisher import Publisher
from tests.actors.test_pair_checkpoint import LAG, assert_same, config
from tests.engine.test_pairbook import PAIRS, SYMS, entries_at, legs, new_book

pytestmark = pytest.mark.ray


def batches(bars: dict) -> list[list[dict]]:
    """A batch every 2 s, each with every symbol's bars final so far: a restarted book that
    missed packets gets them again."""
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 4000
    return [entries_at(bars, c, LAG) for c in range(t0, t1, 2000)]


def fed_everything(cfg, bars: dict):
    book = new_book(cfg, PAIRS)
    for entries in batches(bars):
        book.feed(entries)
    return book


def test_lane_after_the_first_call_and_again_after_a_restart(ray_cluster, tmp_path):
    ray = ray_cluster
    cfg = config(tmp_path)
    bars = legs(3)
    todo = batches(bars)
    third = len(todo) // 3
    actor = ray.remote(PairActor).options(max_restarts=1, max_task_retries=-1).remote(
        cfg.to_dict(), PAIRS)  # fmt: skip
    pub = Publisher([(actor, SYMS)], SYMS)
    for entries in todo[:third]:
        pub.publish(entries)
    pub.close(wait_s=10.0)
    got = ray.get(actor.status.remote())["received"]
    assert got["call"] + got["lane"] == third and got["lane"] > got["call"] >= 1, got
    old_pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
    ray.kill(actor, no_restart=False)  # a new process, an empty book, a new lane
    # the kill is asynchronous: until the new process answers, the old one may still take a
    # packet (and count it there)
    deadline = time.monotonic() + 60
    while ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60) == old_pid:
        assert time.monotonic() < deadline, "the pair actor was not restarted"
        time.sleep(0.05)
    for entries in todo[third:]:
        pub.publish(entries)
    pub.close(wait_s=10.0)
    got = ray.get(actor.status.remote())["received"]
    assert got["call"] + got["lane"] == len(todo) - third and got["lane"] > got["call"] >= 1, got
    book = ray.get(actor.__ray_call__.remote(lambda self: self.book))
    assert_same(fed_everything(cfg, bars), book)
    assert np.isfinite(book.z).all()


@pytest.mark.parametrize("why", ["port out of reach", "no lane opened"])
def test_a_lane_out_of_reach_leaves_the_calls(ray_cluster, tmp_path, caplog, why):
    ray = ray_cluster
    cfg = config(tmp_path)
    bars = legs(4)
    todo = batches(bars)

    class Unreachable(PairActor):  # defined here: Ray ships it by value
        """A PairActor whose lane is out of the feed's reach (a port nobody listens on), or
        that cannot open one (its bar_lane raises)."""

        asked = 0

        def bar_lane(self) -> tuple[str, int, bytes]:
            self.asked += 1
            if why == "no lane opened":
                raise OSError("no address to bind")
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            return ("127.0.0.1", port, b"t" * 16)

        def times_asked(self) -> int:
            return self.asked

    actor = ray.remote(Unreachable).remote(cfg.to_dict(), PAIRS)
    pub = Publisher([(actor, SYMS)], SYMS)
    with caplog.at_level("WARNING", logger="actors.publisher"):
        for entries in todo:
            pub.publish(entries)
        pub.close(wait_s=10.0)
    assert ray.get(actor.status.remote())["received"] == {"lane": 0, "call": len(todo)}
    assert ray.get(actor.times_asked.remote()) == 1  # not again before LANE_RETRY_S
    assert sum("bar lane" in r.message for r in caplog.records) == 1
    assert_same(fed_everything(cfg, bars), ray.get(actor.__ray_call__.remote(lambda s: s.book)))
