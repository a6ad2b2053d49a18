"""BarPacket: publish entries packed into flat arrays come back unchanged, and the packet
crosses a real Ray call intact."""

from __future__ import annotations

import numpy as np

from engine.bars import build_bar_records
from engine.packets import BarPacket, pack, unpack
from tests.kit import random_ticks


def entries() -> list[dict]:
    out = []
    for k, n_ticks in enumerate([400, 0, 37]):
        t = random_ticks(max(n_ticks, 1), seed=k, mean_gap_ms=50.0)[:n_ticks]
        bars = build_bar_records(t["ts"], t["price"], t["qty"], "1s")
        adv = [(int(b) + 1000, 1.5e12 + j) for j, b in enumerate(bars["ts"][:3])]
        out.append({"symbol": f"S{k}USDT", "wm": 1000 * k - 7, "bars": bars, "advances": adv})
    return out


def same(a: list[dict], b: list[dict]) -> None:
    assert [e["symbol"] for e in a] == [e["symbol"] for e in b]
    for x, y in zip(a, b, strict=True):
        assert x["wm"] == y["wm"] and x["advances"] == y["advances"]
        assert x["bars"].dtype == y["bars"].dtype
        np.testing.assert_array_equal(x["bars"], y["bars"])


def test_round_trip():
    e = entries()
    assert len(e[0]["bars"]) > 5 and len(e[1]["bars"]) == 0
    packet = pack(e)
    assert isinstance(packet, BarPacket) and len(packet) == 3
    same(unpack(packet), e)
    assert unpack(pack([])) == []


def test_packet_crosses_a_ray_call(ray_cluster):
    import ray

    @ray.remote
    def echo(packet: BarPacket) -> list[dict]:
        return unpack(packet)

    e = entries()
    same(ray.get(echo.remote(pack(e))), e)
