"""Frame validation: every reject reason, strict types, batch output against a plain loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.binance import REJECT_REASONS, parse_rest_agg_trades
from engine.errors import DataError
from engine.schemas import TICK_DTYPE
from engine.validate import BEHIND_MARGIN, NO_ROW, DecodedBatch, FrameValidator, _accept_ids
from tests.engine.test_aggparse import fuzz_frames, parse
from tests.kit import random_ticks


def payload(a: int = 7, s: str = "BTCUSDT", **over) -> dict:
    d = {"e": "aggTrade", "E": 1_700_000_000_123, "s": s, "a": a, "p": "97012.40",
         "q": "0.013", "f": 100, "l": 102, "T": 1_700_000_000_120, "m": True}  # fmt: skip
    d.update(over)
    return d


def combined(data: dict, stream: str | None = None) -> bytes:
    stream = stream or f"{str(data.get('s', 'btcusdt')).lower()}@aggTrade"
    return json.dumps({"stream": stream, "data": data}).encode()


def drop(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


CASES = [
    ("not_json", b'{"stream": "btcusdt@aggTrade", "data": {'),
    ("not_json", b"\xff\xfe garbage"),
    ("not_json", ""),
    ("bad_frame", b"[1, 2, 3]"),
    ("bad_frame", b'"hello"'),
    ("bad_frame", b'{"foo": 1}'),
    ("bad_frame", combined(payload(e="depthUpdate"))),
    ("bad_frame", json.dumps({"stream": "btcusdt@aggTrade", "data": [1]}).encode()),
    ("bad_frame", json.dumps({"stream": 5, "data": payload()}).encode()),
    *[("missing_field", combined(drop(payload(), k))) for k in "EsapqflTm"],
    ("missing_field", combined(drop(payload(), "e"))),
    ("bad_type", combined(payload(a=7.0))),
    ("bad_type", combined(payload(a="7"))),
    ("bad_type", combined(payload(a=True))),
    ("bad_type", combined(payload(a=-3))),
    ("bad_type", combined(payload(T=1.7e12))),
    ("bad_type", combined(payload(E=None))),
    ("bad_type", combined(payload(f="70"))),
    ("bad_type", combined(payload(l=[1]))),
    ("bad_type", combined(payload(m=1))),
    ("bad_type", combined(payload(m="true"))),
    ("bad_type", combined(payload(s=5))),
    ("bad_type", combined(payload(p=97012.4))),
    ("bad_type", combined(payload(q=None))),
    *[("bad_price", combined(payload(p=p))) for p in
      ["abc", "nan", "inf", "-1.5", "0", "0.000", "1e5", " 1.5", "1_000", "", "1.", ".5"]],
    *[("bad_qty", combined(payload(q=q))) for q in ["x", "NaN", "-0.1", "0", "0.0", "1e-3"]],
    ("unknown_symbol", combined(payload(s="DOGEUSDT"))),
    ("unknown_symbol", combined(payload(s="btcusdt"))),
]


@pytest.mark.parametrize(("reason", "frame"), CASES)
def test_each_reject_reason(reason: str, frame: bytes) -> None:
    v = FrameValidator(["BTCUSDT", "ETHUSDT"])
    out = v.decode_frames([frame])
    assert out.rejects == {reason: 1}
    assert out.ticks == {}
    assert v.rejected[reason] == 1
    assert v.last_id("BTCUSDT") == -1  # a reject never advances the last-seen id


def test_reasons_are_the_documented_set() -> None:
    assert set(REJECT_REASONS) == {
        "not_json", "bad_frame", "missing_field", "bad_type",
        "bad_price", "bad_qty", "unknown_symbol", "duplicate",
    }  # fmt: skip


@pytest.mark.parametrize("as_text", [False, True])
def test_duplicates_and_rejects_do_not_advance(as_text: bool) -> None:
    v = FrameValidator(["BTCUSDT"])
    frames = [combined(payload(a)) for a in (5, 6, 6, 4, 7)]
    frames.insert(2, combined(payload(8, p="bad")))  # rejected: 8 stays unseen
    frames.append(combined(payload(8)))
    if as_text:
        frames = [f.decode() for f in frames]
    out = v.decode_frames(frames)
    np.testing.assert_array_equal(out.ticks["BTCUSDT"]["agg_id"], [5, 6, 7, 8])
    assert out.rejects == {"duplicate": 2, "bad_price": 1}
    assert v.last_id("BTCUSDT") == 8


def test_raw_payload_tolerant_keys_and_marks() -> None:
    v = FrameValidator(["BTCUSDT", "ETHUSDT"])
    mark = {"e": "markPriceUpdate", "E": 1_700_000_001_000, "s": "ETHUSDT", "p": "3001.5",
            "i": "3000.1", "P": "3001.0", "r": "-0.00010000", "T": 1_700_006_400_000}  # fmt: skip
    frames = [
        json.dumps(payload(3, nq="0.01", st="PERP")).encode(),  # raw payload, unknown keys
        combined(payload(4, s="ETHUSDT", extra={"x": 1})),
        combined(mark, "ethusdt@markPrice@1s"),
        json.dumps(drop(mark, "i")).encode(),
        json.dumps({"result": None, "id": 1}).encode(),
        json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": "u-1"}).encode(),
    ]
    out = v.decode_frames(frames)
    assert out.rejects == {}
    assert out.ticks["BTCUSDT"]["agg_id"].tolist() == [3]
    assert out.ticks["ETHUSDT"]["agg_id"].tolist() == [4]
    assert [m.funding_rate for m in out.marks] == [-0.0001, -0.0001]
    assert out.marks[0].mark == 3001.5 and out.marks[0].next_funding_ms == 1_700_006_400_000
    assert [c.id for c in out.controls] == [1, "u-1"]
    assert out.controls[1].error.code == 2
    assert out.streams == {"ethusdt@aggTrade", "ethusdt@markPrice@1s"}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fault_rate", [0.0, 0.2])
def test_batch_matches_plain_loop(seed: int, fault_rate: float) -> None:
    """Against an oracle: a plain Python loop over json.loads with the same rules."""
    rng = np.random.default_rng(seed)
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    streams = {s: random_ticks(300, seed=seed + i, first_id=1000 * (i + 1)) for i, s in
               enumerate(syms)}  # fmt: skip
    frames, expected = [], {s: [] for s in syms}
    last = dict.fromkeys(syms, -1)
    order = rng.permutation(np.repeat(np.arange(3), 300))
    pos = dict.fromkeys(range(3), 0)
    for k in order:
        sym = syms[k]
        t = streams[sym][pos[k]]
        pos[k] += 1
        d = payload(int(t["agg_id"]), s=sym, p=f"{t['price']:.2f}", q=f"{t['qty']:.3f}",
                    T=int(t["ts"]), f=int(t["first_id"]), l=int(t["last_id"]),
                    m=bool(t["buyer_maker"]))  # fmt: skip
        u = rng.random()
        if u < fault_rate / 2:
            d["p"] = "-" + d["p"]
        elif u < fault_rate:
            d["a"] = int(rng.integers(0, t["agg_id"] + 1))  # maybe a duplicate
        frames.append(combined(d))
        ok = not d["p"].startswith("-") and d["a"] > last[sym]
        if ok:
            last[sym] = d["a"]
            expected[sym].append((d["T"], d["a"], float(d["p"]), float(d["q"]), d["f"], d["l"],
                                  d["m"]))  # fmt: skip
    out = FrameValidator(syms).decode_frames(frames)
    for sym in syms:
        want = np.array(expected[sym], dtype=TICK_DTYPE)
        got = out.ticks.get(sym, np.empty(0, TICK_DTYPE))
        for name in TICK_DTYPE.names:
            np.testing.assert_allclose(got[name].astype(float), want[name].astype(float),
                                       rtol=1e-12)  # fmt: skip
    assert sum(out.rejects.values()) == len(frames) - sum(len(v) for v in expected.values())


def test_resume_seed_and_bad_arguments() -> None:
    v = FrameValidator(["BTCUSDT"], {"BTCUSDT": 10})
    out = v.decode_frames([combined(payload(a)) for a in (9, 10, 11)])
    assert out.ticks["BTCUSDT"]["agg_id"].tolist() == [11]
    assert out.rejects == {"duplicate": 2}
    with pytest.raises(DataError, match="at least one symbol"):
        FrameValidator([])
    with pytest.raises(DataError, match="uppercase"):
        FrameValidator(["btcusdt"])
    with pytest.raises(DataError, match="not one of the symbols"):
        FrameValidator(["BTCUSDT"], {"ETHUSDT": 1})
    with pytest.raises(DataError, match="int >= -1"):
        FrameValidator(["BTCUSDT"], {"BTCUSDT": 1.5})


@pytest.mark.parametrize("below", [0, 1, BEHIND_MARGIN - 1, BEHIND_MARGIN, BEHIND_MARGIN + 1])
def test_behind_only_beyond_the_margin(caplog, below: int) -> None:
    """Up to ``BEHIND_MARGIN`` ids below the last seen: an ordinary duplicate (reconnect
    overlap), nothing said; one more and the symbol is behind. Rejected either way."""
    v = FrameValidator(["BTCUSDT", "ETHUSDT"], {"BTCUSDT": 50_000})
    out = v.decode_frames([combined(payload(50_000 - below))])
    assert out.rejects == {"duplicate": 1} and out.ticks == {}
    behind = below > BEHIND_MARGIN
    assert v.ids_behind == ({"BTCUSDT": (50_000 - below, 50_000)} if behind else {})
    assert ("ids went backwards on BTCUSDT" in caplog.text) == behind


def test_ids_further_below_mark_the_symbol_behind_once_per_episode(caplog) -> None:
    """Ids more than ``BEHIND_MARGIN`` below the store's last id: still rejected (the store
    never mixes two sources' ids), the symbol is behind with both ids, the warning is logged
    at once and once per episode; a frame back within the margin ends the episode."""
    stored = 50_000
    v = FrameValidator(["BTCUSDT", "ETHUSDT"], {"BTCUSDT": stored, "ETHUSDT": 10})
    first = stored - BEHIND_MARGIN - 10
    out = v.decode_frames([combined(payload(first)), combined(payload(11, s="ETHUSDT"))])
    assert out.rejects == {"duplicate": 1} and list(out.ticks) == ["ETHUSDT"]
    assert v.ids_behind == {"BTCUSDT": (first, stored)}
    warning = (f"ids went backwards on BTCUSDT: the stream is at id {first}, the store holds up "
               f"to {stored}: the store was written from another source?")  # fmt: skip
    said = [r for r in caplog.records if "backwards" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in said] == [("WARNING", warning)]
    out = v.decode_frames([combined(payload(a)) for a in (first + 1, first + 2)])
    assert out.rejects == {"duplicate": 2} and out.ticks == {}
    assert v.ids_behind == {"BTCUSDT": (first + 2, stored)}  # the stream id follows
    assert caplog.text.count("ids went backwards") == 1
    assert v.last_id("BTCUSDT") == stored  # rejected ids never advance it
    v.decode_frames([combined(payload(stored - 3))])  # within the margin again: episode over
    assert v.ids_behind == {}
    out = v.decode_frames([combined(payload(5)), combined(payload(stored + 1))])
    assert out.ticks["BTCUSDT"]["agg_id"].tolist() == [stored + 1]
    assert v.ids_behind == {}  # the batch's latest frame is not behind
    v.decode_frames([combined(payload(6))])
    assert v.ids_behind == {"BTCUSDT": (6, stored + 1)}
    assert caplog.text.count("ids went backwards") == 2  # a new episode, said again


def test_rest_rows_strict() -> None:
    rows = [{k: v for k, v in payload(a).items() if k not in ("e", "E", "s")} for a in (1, 2, 3)]
    ticks, rejects = parse_rest_agg_trades(json.dumps(rows))
    assert ticks["agg_id"].tolist() == [1, 2, 3] and rejects == {}
    rows[1]["p"] = 5.0
    rows.append({**rows[0], "a": 4, "q": "0"})
    ticks, rejects = parse_rest_agg_trades(json.dumps(rows).encode())
    assert ticks["agg_id"].tolist() == [1, 3]
    assert rejects == {"bad_type": 1, "bad_qty": 1}
    assert parse_rest_agg_trades(b"{")[1] == {"not_json": 1}
    assert parse_rest_agg_trades(b'{"code": -1121}')[1] == {"bad_frame": 1}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bad_frame", [False, True])
def test_batch_equals_frames_one_at_a_time(seed, bad_frame):
    """Whole-column checks give exactly the ticks, marks, rejects and state of the same frames
    decoded one batch each (where no rule can look across frames)."""
    rng = np.random.default_rng(seed)
    syms = ["BTCUSDT", "ETHUSDT"]
    frames = []
    next_id = {"BTCUSDT": 10, "ETHUSDT": 50, "XRPUSDT": 1}
    for k in range(300):
        s = ["BTCUSDT", "ETHUSDT", "XRPUSDT"][int(rng.choice(3, p=[0.5, 0.45, 0.05]))]
        if rng.random() < 0.05:
            frames.append(json.dumps({"stream": f"{s.lower()}@markPrice@1s", "data": {
                "e": "markPriceUpdate", "E": 1000 + k, "s": s, "p": "10.5", "r": "-0.0001",
                "T": 28_800_000}}))  # fmt: skip
            continue
        a = next_id[s] - int(rng.integers(1, 4)) if rng.random() < 0.1 or k > 280 else next_id[s]
        next_id[s] = max(next_id[s], a + 1)
        p = "0.00" if rng.random() < 0.03 else f"{rng.uniform(1, 100):.2f}"
        q = "0.000" if rng.random() < 0.03 else f"{rng.uniform(0.001, 5):.3f}"
        frames.append(json.dumps({"stream": f"{s.lower()}@aggTrade", "data": {
            "e": "aggTrade", "E": 1000 + k, "s": s, "a": a, "p": p, "q": q, "f": a, "l": a,
            "T": 990 + k, "m": bool(rng.random() < 0.5)}}))  # fmt: skip
    if bad_frame:
        frames.insert(150, '{"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade"}}')
    bulk, each = FrameValidator(syms, {"BTCUSDT": 12}), FrameValidator(syms, {"BTCUSDT": 12})
    got, want = bulk.decode_frames(frames), one_at_a_time(each, frames)
    assert got.ticks.keys() == want.ticks.keys()
    for s in want.ticks:
        np.testing.assert_array_equal(got.ticks[s], want.ticks[s])
    assert got.marks == want.marks and got.rejects == want.rejects and got.rejects
    assert got.streams == want.streams and got.event_ms == want.event_ms
    assert bulk.rejected == each.rejected
    assert [bulk.last_id(s) for s in syms] == [each.last_id(s) for s in syms]


def one_at_a_time(v: FrameValidator, frames: list) -> DecodedBatch:
    """Every frame decoded as a batch of its own, the results laid end to end."""
    out = DecodedBatch()
    parts: dict[str, list] = {}
    for frame in frames:
        one = v.decode_frames([frame])
        for s, ticks in one.ticks.items():
            parts.setdefault(s, []).append(ticks)
        out.marks += one.marks
        out.controls += one.controls
        out.streams |= one.streams
        out.event_ms = max(out.event_ms, one.event_ms)
        for reason, n in one.rejects.items():
            out.rejects[reason] = out.rejects.get(reason, 0) + n
    out.ticks = {s: np.concatenate(p) for s, p in parts.items()}
    return out


def assert_same_batch(got, want) -> None:
    """Field by field; tick arrays bitwise (dtype and order included)."""
    assert got.ticks.keys() == want.ticks.keys()
    for s, ticks in want.ticks.items():
        assert got.ticks[s].dtype == ticks.dtype == TICK_DTYPE
        assert got.ticks[s].tobytes() == ticks.tobytes()
    assert got.marks == want.marks and got.controls == want.controls
    assert got.rejects == want.rejects and got.streams == want.streams
    assert got.event_ms == want.event_ms


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("odd", "bad", "others"), [(0.0, 0.0, 0.0), (0.05, 0.0, 0.0),
                                                   (0.6, 0.03, 0.04)])  # fmt: skip
def test_decode_frames_equals_per_frame_path_fuzz(seed, odd, bad, others) -> None:
    """The oracle is a twin validator fed one frame per batch, batch after batch: well
    formed, odd (reordered keys, whitespace, escapes, extra and duplicate keys, odd ints and
    decimals, unknown symbols and streams, markPrice frames, controls) and broken frames."""
    rng = np.random.default_rng(seed)
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    seed_ids = {"ETHUSDT": 1003} if seed % 2 else None
    fast, each = FrameValidator(syms, seed_ids), FrameValidator(syms, seed_ids)
    next_ids: dict[str, int] = {}
    strict_filled = 0
    for _ in range(25):
        frames = fuzz_frames(rng, int(rng.integers(0, 80)), odd, bad, next_ids, others=others)
        cols = parse(frames)
        if cols is not None:
            strict_filled += int((~cols.vouched).sum())
        if rng.random() < 0.3:  # some as text
            frames = [f.decode() if f.isascii() and rng.random() < 0.5 else f for f in frames]
        assert_same_batch(fast.decode_frames(frames), one_at_a_time(each, frames))
        assert fast.rejected == each.rejected
        assert [fast.last_id(s) for s in syms] == [each.last_id(s) for s in syms]
    # what was compared includes frames the column pass left to msgspec
    assert strict_filled >= {0.0: 30, 0.05: 10, 0.6: 0}[odd]


def test_decode_frames_text_and_byte_like_frames() -> None:
    """Text frames (UTF-8 when laid end to end) and bytearray/memoryview frames."""
    frames = [combined(payload(a, s="ETHUSDT", p="1.25")) for a in (1, 2, 3, 4)]
    frames[3] = frames[3].replace(b'"p"', b'"x": "\xc3\xa9", "p"')  # UTF-8 in a skipped value
    mixed = [frames[0].decode(), bytearray(frames[1]), memoryview(frames[2]), frames[3].decode()]
    v, each = FrameValidator(["ETHUSDT"]), FrameValidator(["ETHUSDT"])
    assert parse([bytes(f.encode() if isinstance(f, str) else f) for f in mixed]).vouched[:3].all()
    assert_same_batch(v.decode_frames(mixed), one_at_a_time(each, mixed))
    assert v.last_id("ETHUSDT") == 4


@pytest.mark.parametrize("seed", range(6))
def test_accept_ids_equals_a_plain_python_duplicate_rule(seed):
    """The duplicate rule's kernel against a plain-Python loop: shuffled, repeated and stale
    ids over several symbols, some rows not ok, some symbols absent from the batch."""
    rng = np.random.default_rng(seed)
    n_sym, n = 7, 400
    code = rng.integers(0, n_sym - 1, n).astype(np.int64)  # the last symbol has no row
    ticks = np.zeros(n, dtype=TICK_DTYPE)
    ticks["agg_id"] = rng.integers(0, 300, n)
    ok = rng.random(n) > 0.1
    last = rng.integers(-1, 100, n_sym).astype(np.int64)
    want_last = last.tolist()
    want_acc, want_batch, want_before = [], [NO_ROW] * n_sym, [None] * n_sym
    for i in range(n):
        k, a = int(code[i]), int(ticks["agg_id"][i])
        want_acc.append(bool(ok[i]) and a > want_last[k])
        if ok[i]:
            want_before[k], want_batch[k] = want_last[k], a
            want_last[k] = max(want_last[k], a)
    accepted, batch_last, before_last = _accept_ids(code, ticks["agg_id"], ok, last)
    assert accepted.tolist() == want_acc
    assert batch_last.tolist() == want_batch and last.tolist() == want_last
    seen = batch_last != NO_ROW
    assert before_last[seen].tolist() == [b for b in want_before if b is not None]
    assert not seen[-1]
