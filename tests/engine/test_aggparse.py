"""engine.aggparse against its oracles: msgspec's strict ``CombinedFrame`` decode for every frame
it vouches for, and Python's ``float(text)`` for every decimal. ``fuzz_frames`` (also used by
test_validate) makes well-formed, odd and broken frames from a seed."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import binance
from engine.aggparse import name_table, parse_agg_trades

SYMS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
SYMBOLS = name_table(SYMS)
STREAMS = name_table([binance.agg_trade_stream(s) for s in SYMS])
STRICT = msgspec.json.Decoder(binance.CombinedFrame)
WS = " \t\n\r"


def parse(frames: list[bytes]):
    return parse_agg_trades(b"\0".join(frames), len(frames), SYMBOLS, STREAMS)


# -- a small JSON writer that can say what json.dumps cannot ----------------------------------


class Raw(str):
    """A token written as is (numbers such as ``01`` or ``1e3``, broken text)."""


class Obj(list):
    """An object as a list of (key, value) members: order kept, duplicate keys allowed."""


def dump(value, rng: np.random.Generator, ws: float = 0.0, ascii_only: bool = True) -> str:
    """JSON text of ``value``; each gap between tokens gets whitespace with probability ``ws``."""

    def gap() -> str:
        return "".join(rng.choice(list(WS), size=int(rng.integers(1, 3)))) if rng.random() < ws \
            else ""  # fmt: skip

    def text(v) -> str:
        if isinstance(v, Raw):
            return str(v)
        if isinstance(v, Obj):
            inner = ",".join(gap() + text(k) + gap() + ":" + gap() + text(x) + gap() for k, x in v)
            return "{" + (inner or gap()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(gap() + text(x) + gap() for x in v) + "]"
        return json.dumps(v, ensure_ascii=ascii_only)

    return gap() + text(value) + gap()


def escaped(s: str) -> Raw:
    """A JSON string with every character written as a \\u escape."""
    return Raw('"' + "".join(f"\\u{ord(c):04x}" for c in s) + '"')


# -- the fuzzer --------------------------------------------------------------------------------

ODD_INTS = [Raw("-0"), Raw("01"), Raw("1.0"), Raw("1e3"), Raw("1E3"), 2**63 - 1, 2**63, 2**64,
            -5, 10**18 - 1, 10**18, 10**19, 0, True, None, "7", 7.5]  # fmt: skip
ODD_DECIMALS = ["0", "0.000", "00012.50", "1e5", "-1.5", "+1", ".5", "1.", "", " 1.5", "1_0",
                "nan", "inf", "9" * 20, "9" * 21, "1." + "0" * 20, "1." + "0" * 21,
                "123456789.123456789", "0." + "0" * 19 + "1", "9007199254740993",
                "1.7976931348623157", Raw("1.5"), Raw("2"), None, escaped("1.5"),
                "\u0661.5"]  # fmt: skip
EXTRA_VALUES = ["0.01", "PERP", "", 12, -3, Raw("-0.0e-0"), Raw("1.5E+07"), 1.25, True, False,
                None, Raw("123456789012345678901234567890"), Raw("01"), Raw("1."), Raw("-"),
                Raw("1e"), [], [1, "a"], Obj([("x", 1)]), "caf\u00e9", escaped("x"),
                Raw('"a\\qb"'), Raw('"tab\there"')]  # fmt: skip


def trade_payload(rng: np.random.Generator, sym: str, agg_id: int) -> Obj:
    return Obj([("e", "aggTrade"), ("E", 1_796_097_835_662 + agg_id), ("s", sym), ("a", agg_id),
                ("p", f"{rng.uniform(0.01, 99_999):.{int(rng.integers(0, 9))}f}"),
                ("q", f"{rng.uniform(0.001, 50):.{int(rng.integers(0, 6))}f}"),
                ("f", 10 * agg_id), ("l", 10 * agg_id + int(rng.integers(0, 5))),
                ("T", 1_796_097_835_660 + agg_id), ("m", bool(rng.random() < 0.5))])  # fmt: skip


def put(obj: Obj, key: str, value) -> None:
    """Set ``key`` (its first member; appended when missing)."""
    keys = [k for k, _ in obj]
    if key in keys:
        obj[keys.index(key)] = (key, value)
    else:
        obj.append((key, value))


def pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(0, len(options)))]


def mutate(rng: np.random.Generator, data: Obj, env: Obj) -> None:
    """One odd thing, in place: some leave the frame valid, others break it."""
    kind = int(rng.integers(0, 14))
    k = int(rng.integers(0, len(data))) if data else 0
    if kind == 0:
        rng.shuffle(data)
    elif kind == 1:
        rng.shuffle(env)
    elif kind == 2:  # an extra key, in the payload or the envelope
        target = data if rng.random() < 0.7 else env
        key = pick(rng, ["nq", "st", "x", "", "stream2", "E2", "\u00e9"])
        target.insert(int(rng.integers(0, len(target) + 1)), (key, pick(rng, EXTRA_VALUES)))
    elif kind == 3 and data:  # a duplicate key (msgspec keeps the last)
        key, value = data[k]
        data.append((key, value if rng.random() < 0.5 else pick(rng, ODD_INTS)))
    elif kind == 4:  # an odd int, or an int key written twice under another name
        put(data, pick(rng, list("EafTl")), pick(rng, ODD_INTS))
    elif kind == 5:
        put(data, pick(rng, ["p", "q"]), pick(rng, ODD_DECIMALS))
    elif kind == 6:
        put(data, "m", pick(rng, [1, "true", None, Raw("True"), 0]))
    elif kind == 7:  # text spelled with escapes (the same value once decoded)
        key = pick(rng, ["s", "e", "p"])
        value = dict(data).get(key)
        if isinstance(value, str):
            put(data, key, escaped(value))
    elif kind == 8:
        put(
            data,
            "s",
            pick(rng, ["DOGEUSDT", "btcusdt", "BTCUSD", "BTCUSDTX", "", 5, "BTC\u00dcSDT"]),
        )
    elif kind == 9:
        put(data, "e", pick(rng, ["markPriceUpdate", "depthUpdate", "aggtrade", 1]))
    elif kind == 10 and data:
        del data[k]
    elif kind == 11:
        streams = ["dogeusdt@aggTrade", "ethusdt@aggTrade", "btcusdt@markPrice@1s", "", 5,
                   escaped("btcusdt@aggTrade"), "btcusdt@aggtrade"]  # fmt: skip
        put(env, "stream", pick(rng, streams))
    elif kind == 12:
        env.append(("data", Obj(data[:3])))
    elif env:
        env.pop(int(rng.integers(0, len(env))))


def broken(rng: np.random.Generator, frame: bytes) -> bytes:
    kind = int(rng.integers(0, 6))
    if kind == 0:  # truncated
        return frame[: int(rng.integers(0, len(frame)))]
    if kind == 1:  # a byte changed
        i = int(rng.integers(0, len(frame)))
        return frame[:i] + bytes([int(rng.integers(0, 256))]) + frame[i + 1 :]
    if kind == 2:  # trailing bytes
        return frame + [b"x", b"{}", b"\x00", b"\x0c", b" ,", b"}"][int(rng.integers(0, 6))]
    if kind == 3:  # leading bytes
        return [b"\xef\xbb\xbf", b"\x0b", b"x", b" \n"][int(rng.integers(0, 4))] + frame
    if kind == 4:
        return [b"", b"[1, 2]", b'"x"', b"{}", b"null", b"\xff\xfe"][int(rng.integers(0, 6))]
    i = int(rng.integers(0, len(frame)))
    return frame[:i] + b"\\" + frame[i:]


def fuzz_frames(
    rng: np.random.Generator,
    n: int,
    odd: float,
    bad: float,
    next_ids: dict[str, int],
    marks: float = 0.04,
    others: float = 0.02,
) -> list[bytes]:
    """``n`` frames: combined aggTrades of SYMS (some of other symbols), ``odd`` of them with a
    mutation and ``bad`` broken; ``marks`` markPrice frames (an odd price where odd), ``others``
    control replies and raw payloads. Ids mostly increase per symbol (``next_ids`` carries
    them), sometimes repeat or go back."""
    frames = []
    for _ in range(n):
        u = rng.random()
        sym = pick(rng, SYMS) if rng.random() < 0.95 else "XRPUSDT"
        if u < marks:
            price = pick(rng, ["0", "-1", "1e3", "0.5"]) if rng.random() < odd else "97010.1"
            data = Obj([("e", "markPriceUpdate"), ("E", 1_796_097_836_000), ("s", sym),
                        ("p", price), ("i", "97001.3"), ("P", "97005.2"), ("r", "-0.00010000"),
                        ("T", 1_796_112_000_000)])  # fmt: skip
            text = dump(Obj([("stream", binance.mark_price_stream(sym)), ("data", data)]), rng)
        elif u < marks + others / 2:
            text = dump(Obj([("result", None), ("id", int(rng.integers(0, 9)))]), rng)
        else:
            a = next_ids.get(sym, 1000)
            if rng.random() < 0.1:
                a -= int(rng.integers(0, 4))
            next_ids[sym] = max(next_ids.get(sym, 1000), a + 1)
            data = trade_payload(rng, sym, a)
            env = Obj([("stream", binance.agg_trade_stream(sym)), ("data", data)])
            while rng.random() < odd:
                mutate(rng, data, env)
            whole = env if u >= marks + others else data  # raw payloads
            text = dump(whole, rng, ws=0.3 if rng.random() < 0.2 else 0.0,
                        ascii_only=rng.random() < 0.8)  # fmt: skip
        frame = text.encode("utf-8", "surrogatepass")
        if rng.random() < bad:
            frame = broken(rng, frame)
        frames.append(frame)
    return frames


# -- tests ---------------------------------------------------------------------------------------


def assert_matches_strict(frames: list[bytes]) -> np.ndarray:
    """Every vouched frame decodes strictly to an AggTrade with exactly the kernel's values."""
    if any(b"\0" in f for f in frames):  # then they cannot be told apart: none is vouched
        assert parse(frames) is None
        frames = [f for f in frames if b"\0" not in f]
    cols = parse(frames)
    for i in np.flatnonzero(cols.vouched).tolist():
        env = STRICT.decode(frames[i])  # raises if the kernel vouched for a bad frame
        d, t = env.data, cols.ticks[i]
        assert type(d) is binance.AggTrade, frames[i]
        assert env.stream in STREAMS.names
        assert (
            int(t["ts"]),
            int(t["agg_id"]),
            int(t["first_id"]),
            int(t["last_id"]),
            bool(t["buyer_maker"]),
            int(cols.event_ms[i]),
        ) == (d.T, d.a, d.f, d.l, d.m, d.E)
        assert t["price"].tobytes() == np.float64(float(d.p)).tobytes(), frames[i]  # fmt: skip
        assert t["qty"].tobytes() == np.float64(float(d.q)).tobytes(), frames[i]
        assert int(cols.symbol[i]) == (SYMS.index(d.s) if d.s in SYMS else -1), frames[i]
    seen = [STRICT.decode(frames[i]).stream for i in np.flatnonzero(cols.vouched).tolist()]
    assert cols.stream_seen.tolist() == [seen.count(s) for s in STREAMS.names]
    return cols.vouched


@pytest.mark.parametrize("seed", range(8))
def test_vouched_frames_are_what_msgspec_decodes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frames = fuzz_frames(rng, 1500, odd=0.6, bad=0.1, next_ids={})
    vouched = assert_matches_strict(frames)
    assert 0.2 < vouched.mean() < 0.9  # both kinds well represented


@pytest.mark.parametrize("seed", range(4))
def test_well_formed_variants_are_vouched(seed: int) -> None:
    """Key order, whitespace, scalar extra keys: still the fast path (and still exact)."""
    rng = np.random.default_rng(seed)
    frames = []
    for a in range(400):
        data = trade_payload(rng, SYMS[a % 3], a)
        env = Obj([("stream", binance.agg_trade_stream(SYMS[a % 3])), ("data", data)])
        rng.shuffle(data)
        rng.shuffle(env)
        for _ in range(int(rng.integers(0, 3))):
            data.insert(int(rng.integers(0, len(data) + 1)),
                        ("nq", EXTRA_VALUES[int(rng.integers(0, 11))]))  # fmt: skip
        if rng.random() < 0.2:
            env.insert(int(rng.integers(0, 3)), ("x", 1))
        frames.append(dump(env, rng, ws=0.5 if a % 2 else 0.0).encode())
    assert assert_matches_strict(frames).all()


REFUSED = [
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTC\\u0055SDT","a":1,'
    b'"p":"1","q":"1","f":1,"l":1,"T":1,"m":true}}',  # an escape (same symbol once decoded)
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"a":2,'
    b'"p":"1","q":"1","f":1,"l":1,"T":1,"m":true}}',  # duplicate key (msgspec keeps a=2)
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":-0,'
    b'"p":"1","q":"1","f":1,"l":1,"T":1,"m":true}}',  # -0 (msgspec: 0)
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,'
    b'"p":"1","q":"1","f":1,"l":1,"T":1,"m":true,"x":{"y":[1]}}}',  # nested extra value
    b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT",'
    b'"a":1000000000000000000,"p":"1","q":"1","f":1,"l":1,"T":1,"m":true}}',  # 19 digits
    b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1,"s":"BTCUSDT",'
    b'"p":"1","r":"0","T":1}}',
    b'{"stream":"x@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,'
    b'"p":"1","q":"1","f":1,"l":1,"T":1,"m":true}}',  # a stream not in the table
    b'{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"p":"1","q":"1","f":1,"l":1,"T":1,"m":true}',
    b'{"result":null,"id":1}',
]


def test_refused_frames() -> None:
    assert not parse(REFUSED).vouched.any()
    assert all(STRICT.decode(f) for f in REFUSED[:5])  # valid, yet for msgspec to decode


def test_decimals_equal_python_float() -> None:
    """Edge cases and random digit strings on both sides of the exact fast path."""
    rng = np.random.default_rng(7)
    texts = ["0", "0.0", "1", "00000000000000000001", "9007199254740991", "9007199254740992",
             "9007199254740993", "18014398509481985", "0.1", "0.3", "2.675", "1.7976931348623157",
             "99999999999999999999.99999999999999999999", "0.00000000000000000001",
             "10000000000000000000", "123456789012345.6", "1234567890123456.7", "5",
             "0." + "0" * 20, "4.35", "0.30000000000000004", "1" + "0" * 22]  # fmt: skip
    for _ in range(20_000):
        n_int, n_frac = int(rng.integers(1, 21)), int(rng.integers(0, 21))
        digits = "".join(map(str, rng.integers(0, 10, n_int + n_frac)))
        if rng.random() < 0.3:  # short: the fast path
            digits = digits[: int(rng.integers(1, 17))]
            n_int = min(n_int, len(digits))
        text = digits[:n_int] + ("." + digits[n_int:] if len(digits) > n_int else "")
        texts.append(text)
    frames = [b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,'
              b'"p":"%s","q":"%s","f":1,"l":1,"T":1,"m":true}}' % (t.encode(), t[::-1].encode())
              for t in texts if binance.DECIMAL_RE.match(t[::-1])]  # fmt: skip
    cols = parse(frames)
    assert cols.vouched.all()
    want_p = np.array([float(json.loads(f)["data"]["p"]) for f in frames])
    want_q = np.array([float(json.loads(f)["data"]["q"]) for f in frames])
    np.testing.assert_array_equal(cols.ticks["price"].view(np.int64), want_p.view(np.int64))
    np.testing.assert_array_equal(cols.ticks["qty"].view(np.int64), want_q.view(np.int64))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,20})?", fullmatch=True), min_size=1,
                max_size=20))  # fmt: skip
def test_decimals_equal_python_float_hypothesis(texts: list[str]) -> None:
    frames = [
        b'{"stream":"ethusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"ETHUSDT","a":1,'
        b'"p":"%s","q":"1.5","f":1,"l":1,"T":1,"m":false}}' % t.encode()
        for t in texts
    ]
    cols = parse(frames)
    assert cols.vouched.all()
    want = np.array([float(t) for t in texts])
    assert cols.ticks["price"].tobytes() == want.tobytes()


def test_frames_split_at_nul_bytes_and_arguments() -> None:
    frame = b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,' \
        b'"p":"1","q":"1","f":1,"l":1,"T":1,"m":true}}'  # fmt: skip
    # a frame cut short never reads into the next one; empty frames are frames
    cols = parse([frame[:-1], frame, b"", frame[:40], frame + b" \n", b"\t" + frame])
    assert cols.vouched.tolist() == [False, True, False, False, True, True]
    assert cols.stream_seen.tolist() == [3, 0, 0]
    # not exactly n frames: a NUL byte inside a frame, or a wrong count
    assert parse_agg_trades(b"\0".join([frame, frame[:9] + b"\0" + frame]), 2, SYMBOLS,
                            STREAMS) is None  # fmt: skip
    assert parse_agg_trades(frame, 2, SYMBOLS, STREAMS) is None
    assert parse_agg_trades(frame + b"\0" + frame, 1, SYMBOLS, STREAMS) is None
    empty = parse_agg_trades(b"", 0, SYMBOLS, STREAMS)
    assert len(empty.ticks) == 0 and empty.stream_seen.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="number of frames"):
        parse_agg_trades(frame, -1, SYMBOLS, STREAMS)
    with pytest.raises(ValueError, match="number of frames"):
        parse_agg_trades(frame, 0, SYMBOLS, STREAMS)
    with pytest.raises(ValueError, match="NameTable"):
        parse_agg_trades(frame, 1, SYMS, STREAMS)
    # a name that is not printable ASCII never matches; its neighbours still do
    odd = name_table(["B\u00c4D", "BTCUSDT"])
    assert odd.lens.tolist() == [-1, 7]
    cols = parse_agg_trades(frame, 1, odd, STREAMS)
    assert cols.vouched.tolist() == [True] and cols.symbol.tolist() == [1]
