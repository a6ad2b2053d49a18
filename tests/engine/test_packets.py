"""BarPacket: publish entries packed into flat arrays come back unchanged, the packet crosses a
real Ray call intact, and its socket frame decodes to the same entries or is refused."""

from __future__ import annotations

import numpy as np
import pytest

from engine.bars import build_bar_records
from engine.packets import BarPacket, from_bytes, pack, to_bytes, unpack
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


def test_frame_round_trip():
    e = entries()
    frame = to_bytes(pack(e))
    same(unpack(from_bytes(frame)), e)
    assert unpack(from_bytes(to_bytes(pack([])))) == []
    one = [{**e[0], "symbol": "BTCUSDT"}]
    same(unpack(from_bytes(to_bytes(pack(one)))), one)


def _refused(frame: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_bytes(frame)


def test_bad_frames_are_refused():
    frame = bytearray(to_bytes(pack(entries())))
    _refused(bytes(frame[:10]), "shorter than its header")
    _refused(bytes(frame[:-1]), "its header says")
    _refused(bytes(frame) + b"\0", "its header says")
    _refused(b"XXXX" + bytes(frame[4:]), "magic")
    # three names where the header says three symbols, but one name joined into another
    bad = bytes(frame).replace(b"S0USDT\nS1USDT", b"S0USDT:S1USDT")
    _refused(bad, "symbol names for 3 symbols")
    # bar_ends that count down: the header's totals still add up
    at = 24 + len(b"S0USDT\nS1USDT\nS2USDT") + 3 * 8  # header, names, wm
    ends = np.frombuffer(bytes(frame[at : at + 24]), "<i8")
    frame[at : at + 24] = np.array([ends[2], ends[1], ends[2]], "<i8").tobytes()
    _refused(bytes(frame), "bar_ends do not count up")
