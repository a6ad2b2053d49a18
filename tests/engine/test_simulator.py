"""The exchange simulator against real websockets and HTTP over loopback.

Oracles: the simulator's own full history (every trade ever made), a strict frame classifier
written here in plain Python, statsmodels (OLS, ADF, Engle-Granger) and pandas for the
market model.
"""

from __future__ import annotations

import base64
import itertools
import math
import os
import signal
import socket
import struct
import subprocess
import time
from decimal import Decimal

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
import statsmodels.api as sm
from cli_env import pairstack, scrubbed_env
from statsmodels.tsa.stattools import adfuller, coint
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from actors.cli.sim import configure, settings_from_args
from engine.binance import REJECT_REASONS
from engine.config import FaultsConfig, SimulatorConfig, parse_simulator
from engine.errors import ConfigError, DataError, FeedError
from engine.schemas import TICK_DTYPE
from engine.simulator import Market, Simulator

T0 = 1_700_000_000_000
EIGHT_HOURS_MS = 8 * 3_600_000
AGG_KEYS = {"e": str, "E": int, "s": str, "a": int, "p": str, "q": str, "f": int, "l": int,
            "T": int, "m": bool}  # fmt: skip
MARK_KEYS = {"e": str, "E": int, "s": str, "p": str, "i": str, "P": str, "r": str, "T": int}


# -- helpers -------------------------------------------------------------------------------


def _connect(url: str):
    """A sync websocket client without flow control, so closing with unread frames is quick."""
    return connect(url, max_queue=None, open_timeout=10)


def _read_for(ws, seconds: float) -> list[dict | str]:
    """Every frame received during ``seconds`` (decoded JSON, or the raw text if not JSON)."""
    out: list[dict | str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            text = ws.recv(timeout=left)
        except TimeoutError:
            break
        try:
            out.append(orjson.loads(text))
        except orjson.JSONDecodeError:
            out.append(text)
    return out


def _reply(ws, msg_id, timeout: float = 5.0) -> tuple[dict, list]:
    """Read until the control reply with ``msg_id``; return it and the frames before it."""
    before = []
    deadline = time.monotonic() + timeout
    while True:
        frame = orjson.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        is_reply = isinstance(frame, dict) and ("result" in frame or "error" in frame)
        if is_reply and frame.get("id") == msg_id:
            return frame, before
        before.append(frame)


def _send(ws, method: str, params=None, msg_id=1) -> None:
    msg = {"method": method, "id": msg_id}
    if params is not None:
        msg["params"] = params
    ws.send(orjson.dumps(msg).decode())


def _payloads(frames: list, stream: str | None = None) -> list[dict]:
    """aggTrade payloads of combined frames (optionally of one stream)."""
    return [
        f["data"]
        for f in frames
        if isinstance(f, dict) and "data" in f and f["data"].get("e") == "aggTrade"
        and (stream is None or f["stream"] == stream)
    ]  # fmt: skip


def _by_id(history: np.ndarray) -> dict[int, np.void]:
    return {int(r["agg_id"]): r for r in history}


def _assert_matches_history(payload: dict, row, spec_precision: tuple[int, int]) -> None:
    pp, qp = spec_precision
    assert payload["p"] == f"{row['price']:.{pp}f}"
    assert payload["q"] == f"{row['qty']:.{qp}f}"
    assert (payload["f"], payload["l"], payload["T"], payload["m"]) == (
        int(row["first_id"]), int(row["last_id"]), int(row["ts"]), bool(row["buyer_maker"])
    )  # fmt: skip


def _precision(sim: Simulator, symbol: str) -> tuple[int, int]:
    spec = sim.market.specs[symbol]
    return spec.price_precision, spec.quantity_precision


def _classify(frame: str, symbol: str, last_valid: list[int]) -> str | None:
    """Plain-Python strict client: the reject reason of a combined aggTrade frame, or None."""
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return "not_json"
    data = obj["data"]
    if data.get("e") != "aggTrade":
        return "bad_frame"
    if any(k not in data for k in AGG_KEYS):
        return "missing_field"
    if any(type(data[k]) is not t for k, t in AGG_KEYS.items()):
        return "bad_type"
    for key, reason in (("p", "bad_price"), ("q", "bad_qty")):
        try:
            value = float(data[key])
        except ValueError:
            return reason
        if not (math.isfinite(value) and value > 0):
            return reason
    if data["s"] != symbol:
        return "unknown_symbol"
    if last_valid and data["a"] <= last_valid[-1]:
        return "duplicate"
    last_valid.append(data["a"])
    return None


def _rest(sim: Simulator, path: str, **params) -> httpx.Response:
    return httpx.get(sim.url_rest + path, params=params, timeout=10.0)


def _all_rest_trades(sim: Simulator, symbol: str, from_id: int, to_id: int) -> list[dict]:
    rows: list[dict] = []
    while from_id <= to_id:
        page = _rest(sim, "/fapi/v1/aggTrades", symbol=symbol, fromId=from_id, limit=1000).json()
        assert page, f"REST returned nothing from id {from_id}"
        rows.extend(page)
        from_id = page[-1]["a"] + 1
    return [r for r in rows if r["a"] <= to_id]


@pytest.fixture(scope="module")
def sim():
    """A fault-free simulator with 15 minutes of market history and lively streams."""
    with Simulator(SimulatorConfig(seed=7, rate=40.0, history_s=30.0, history_days=0.01)) as s:
        yield s


def _run(**fault_kwargs) -> Simulator:
    symbols = fault_kwargs.pop("symbols", ("BTCUSDT", "ETHUSDT"))
    rate = fault_kwargs.pop("rate", 60.0)
    server_keys = ("ping_interval_s", "pong_timeout_s", "max_lifetime_s", "rest_weight_limit",
                   "history_s", "max_streams")  # fmt: skip
    extra = {k: fault_kwargs.pop(k) for k in server_keys if k in fault_kwargs}
    config = SimulatorConfig(seed=3, rate=rate, faults=FaultsConfig(**fault_kwargs), **extra)
    return Simulator(config, symbols).start_in_thread()


# -- market model ----------------------------------------------------------------------------


def _generate(market: Market, start_ms: int, end_ms: int) -> dict[str, np.ndarray]:
    return {sym: market.trades(sym, start_ms, end_ms) for sym in market.symbols}


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_market_is_deterministic_for_a_seed(seed):
    symbols = ["BTCUSDT", "ETHUSDT", "XYZUSDT"]
    a = _generate(Market(symbols, seed=seed, rate=10), T0, T0 + 120_000)
    b = _generate(Market(symbols, seed=seed, rate=10), T0, T0 + 120_000)
    c = _generate(Market(symbols, seed=seed + 1, rate=10), T0, T0 + 120_000)
    for sym in a:
        np.testing.assert_array_equal(a[sym], b[sym])
        assert not np.array_equal(a[sym]["price"][:50], c[sym]["price"][:50])


@pytest.mark.parametrize("chunk_ms", [100, 777, 10_000, 50_000])
def test_market_spans_generated_apart_equal_one_span(chunk_ms):
    """Random access: pieces made last-first on a fresh market join into the whole span."""
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    start, end = T0 + 3_500_000, T0 + 3_700_000  # across an hour boundary
    whole = _generate(Market(symbols, seed=2, rate=20), start, end)
    cuts = [*range(start, end, chunk_ms), end]
    market = Market(symbols, seed=2, rate=20)
    parts = [_generate(market, a, b)
             for a, b in reversed(list(itertools.pairwise(cuts)))]  # fmt: skip
    for sym, ticks in whole.items():
        assert len(ticks) > 1000
        np.testing.assert_array_equal(np.concatenate([p[sym] for p in parts[::-1]]), ticks)


@pytest.mark.parametrize(
    ("symbol", "rate"), [("BTCUSDT", 5.0), ("SOLUSDT", 20.0), ("QQQUSDT", 2.0)]
)
def test_market_trades_respect_exchange_rules(symbol, rate):
    market = Market([symbol], seed=4, rate=rate)
    ticks = market.trades(symbol, T0, T0 + 1_800_000)
    spec = market.specs[symbol]
    assert ticks.dtype == TICK_DTYPE
    np.testing.assert_array_equal(np.diff(ticks["agg_id"]), 1)
    np.testing.assert_array_equal(ticks["first_id"][1:], ticks["last_id"][:-1] + 1)
    assert np.all(ticks["last_id"] >= ticks["first_id"])
    assert np.all(np.diff(ticks["ts"]) >= 0)
    assert ticks["ts"][0] >= T0 and ticks["ts"][-1] < T0 + 1_800_000
    tick, step = Decimal(spec.tick_size), Decimal(spec.step_size)
    for row in ticks[:: max(1, len(ticks) // 500)]:
        assert Decimal(f"{row['price']:.{spec.price_precision}f}") % tick == 0
        assert Decimal(f"{row['qty']:.{spec.quantity_precision}f}") % step == 0
        assert row["qty"] >= float(step)
    # a fixed count per 10 s block (bursts move trades inside a block): the rate exactly
    assert len(ticks) == rate * 1800
    assert 0.4 < ticks["buyer_maker"].mean() < 0.6


def _closes(ticks: np.ndarray, bar: str) -> pd.Series:
    index = pd.to_datetime(ticks["ts"], unit="ms")
    return pd.Series(ticks["price"], index=index).resample(bar).last()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_market_groups_are_cointegrated_with_the_true_parameters(seed):
    market = Market(["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"], seed=seed, rate=10)
    trades = _generate(market, T0, T0 + 4 * 3_600_000)
    assert market.groups == (("BTCUSDT", "ETHUSDT"), ("SOLUSDT", "BNBUSDT"))
    for y, x in (("ETHUSDT", "BTCUSDT"), ("BNBUSDT", "SOLUSDT")):
        truth = market.truth(y)
        assert truth.leader == x
        # 5-second closes: 2880 points over 4 h
        closes = [_closes(trades[y], "5s"), _closes(trades[x], "5s")]
        df = pd.concat(closes, axis=1, keys=["y", "x"])
        df = df.ffill().dropna()
        ly, lx = np.log(df["y"].to_numpy()), np.log(df["x"].to_numpy())
        beta_ols = sm.OLS(ly, sm.add_constant(lx)).fit().params[1]
        np.testing.assert_allclose(beta_ols, truth.beta, rtol=0.2)
        spread = ly - truth.beta * lx - truth.alpha
        assert adfuller(spread)[1] < 0.01
        assert coint(ly, lx)[1] < 0.01
        phi = np.linalg.lstsq(
            np.column_stack([spread[:-1], np.ones(len(spread) - 1)]), spread[1:], rcond=None
        )[0][0]
        np.testing.assert_allclose(-5 * math.log(2) / math.log(phi), truth.half_life_s, rtol=0.3)
        np.testing.assert_allclose(spread.std(), truth.spread_sigma, rtol=0.2)
    lead = market.truth("BTCUSDT")
    assert (lead.beta, lead.alpha) == (1.0, 0.0) and math.isnan(lead.half_life_s)


def test_market_mark_and_funding():
    market = Market(["ETHUSDT"], seed=1)
    quote = market.mark_at("ETHUSDT", T0 + 600_000)
    np.testing.assert_allclose(quote.settle, 0.5 * (quote.mark + quote.index), rtol=1e-12)
    premium = quote.mark / quote.index - 1.0
    expected = premium + min(max(1e-4 - premium, -5e-4), 5e-4)  # Binance's funding formula
    np.testing.assert_allclose(quote.funding_rate, expected, rtol=1e-9, atol=1e-15)


# -- websocket streams ------------------------------------------------------------------------


def test_combined_stream_frames_have_binance_types_and_match_history(sim):
    streams = "btcusdt@aggTrade/ethusdt@aggTrade/btcusdt@markPrice@1s"
    with _connect(f"{sim.url_ws}/stream?streams={streams}") as ws:
        frames = _read_for(ws, 2.2)
    assert all(isinstance(f, dict) and set(f) == {"stream", "data"} for f in frames)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        payloads = _payloads(frames, f"{symbol.lower()}@aggTrade")
        assert len(payloads) > 10
        history = _by_id(sim.history(symbol))
        for p in payloads:
            assert set(p) == set(AGG_KEYS)
            assert all(type(p[k]) is t for k, t in AGG_KEYS.items())
            assert p["e"] == "aggTrade" and p["s"] == symbol and p["T"] <= p["E"]
            _assert_matches_history(p, history[p["a"]], _precision(sim, symbol))
        np.testing.assert_array_equal(np.diff([p["a"] for p in payloads]), 1)
    marks = [f["data"] for f in frames if f["stream"] == "btcusdt@markPrice@1s"]
    assert marks
    for m in marks:
        assert set(m) == set(MARK_KEYS) and all(type(m[k]) is t for k, t in MARK_KEYS.items())
        assert m["e"] == "markPriceUpdate" and m["s"] == "BTCUSDT"
        assert m["E"] % 1000 == 0 and m["T"] % EIGHT_HOURS_MS == 0
        assert 0 < m["T"] - m["E"] <= EIGHT_HOURS_MS
        assert float(m["p"]) > 0 and float(m["i"]) > 0 and abs(float(m["r"])) < 0.01


def test_mark_price_without_1s_comes_every_3_seconds(sim):
    with _connect(f"{sim.url_ws}/stream?streams=ethusdt@markPrice") as ws:
        frames = _read_for(ws, 3.5)
    assert frames and all(f["stream"] == "ethusdt@markPrice" for f in frames)
    assert all(f["data"]["E"] % 3000 == 0 for f in frames)


@pytest.mark.parametrize("path", ["/ws/btcusdt@aggTrade/ethusdt@aggTrade", "/ws"])
def test_raw_stream_sends_bare_payloads(sim, path):
    with _connect(f"{sim.url_ws}{path}") as ws:
        if path == "/ws":
            _send(ws, "SUBSCRIBE", ["btcusdt@aggTrade", "ethusdt@aggTrade"], 9)
            assert _reply(ws, 9)[0] == {"result": None, "id": 9}
        frames = _read_for(ws, 1.0)
    assert frames and all("stream" not in f and f["e"] == "aggTrade" for f in frames)
    assert {f["s"] for f in frames} == {"BTCUSDT", "ETHUSDT"}


@pytest.mark.parametrize(
    "path",
    ["/stream?streams=btcusdt@aggTrade", "/ws/btcusdt@aggTrade", "/ws",
     "/public/stream?streams=btcusdt@aggTrade"],
)  # fmt: skip
def test_unrouted_paths_accept_and_answer_but_deliver_nothing(sim, path):
    url = f"ws://127.0.0.1:{sim.port}{path}"
    with _connect(url) as ws:
        _send(ws, "SUBSCRIBE", ["ethusdt@aggTrade", "ethusdt@markPrice@1s"], "sub-1")
        reply, before = _reply(ws, "sub-1")
        assert reply == {"result": None, "id": "sub-1"} and before == []
        _send(ws, "LIST_SUBSCRIPTIONS", msg_id=2)
        listed = _reply(ws, 2)[0]["result"]
        assert "ethusdt@aggTrade" in listed
        assert _read_for(ws, 1.2) == []


@pytest.mark.parametrize("msg_id", [4_294_967_296, "6f1d2c54-2b7a-4e0e-9a53-1c7d0f6b1e11"])
def test_subscribe_list_unsubscribe_echo_ids(sim, msg_id):
    with _connect(f"{sim.url_ws}/stream") as ws:
        assert _read_for(ws, 0.3) == []
        _send(ws, "SUBSCRIBE", ["btcusdt@aggTrade", "solusdt@aggTrade"], msg_id)
        assert _reply(ws, msg_id)[0] == {"result": None, "id": msg_id}
        _send(ws, "LIST_SUBSCRIPTIONS", msg_id=msg_id)
        assert _reply(ws, msg_id)[0] == {"result": ["btcusdt@aggTrade", "solusdt@aggTrade"],
                                         "id": msg_id}  # fmt: skip
        both = _read_for(ws, 0.6)
        assert _payloads(both, "btcusdt@aggTrade") and _payloads(both, "solusdt@aggTrade")
        _send(ws, "UNSUBSCRIBE", ["btcusdt@aggTrade"], msg_id)
        assert _reply(ws, msg_id)[0] == {"result": None, "id": msg_id}
        after = _read_for(ws, 0.8)
        assert _payloads(after, "solusdt@aggTrade") and not _payloads(after, "btcusdt@aggTrade")
        _send(ws, "LIST_SUBSCRIPTIONS", msg_id=msg_id)
        assert _reply(ws, msg_id)[0]["result"] == ["solusdt@aggTrade"]


@pytest.mark.parametrize(
    ("message", "code", "echo"),
    [
        ("{not json", 3, None),
        ('{"method": "SUBSCRIBE", "params": "btcusdt@aggTrade", "id": 5}', 2, 5),
        ('{"method": "SUBSCRIBE", "params": [], "id": 5}', 2, 5),
        ('{"method": "SUBSCRIBE", "params": [7], "id": "x"}', 2, "x"),
        ('{"method": "SUBSCRIBE", "params": ["no-at-sign"], "id": 5}', 2, 5),
        ('{"method": "FROBNICATE", "id": 6}', 2, 6),
        ('{"params": ["btcusdt@aggTrade"], "id": 7}', 2, 7),
        ('{"method": "LIST_SUBSCRIPTIONS", "id": 1.5}', 2, None),
        ('{"method": "LIST_SUBSCRIPTIONS", "id": -3}', 2, None),
        ('{"method": "LIST_SUBSCRIPTIONS", "id": true}', 2, None),
        ('{"method": "LIST_SUBSCRIPTIONS", "id": 8, "extra": 1}', 2, 8),
        ('["SUBSCRIBE"]', 2, None),
    ],
)
def test_bad_control_messages_get_binance_error_json(sim, message, code, echo):
    with _connect(f"{sim.url_ws}/stream") as ws:
        ws.send(message)
        reply = orjson.loads(ws.recv(timeout=5))
        assert set(reply) == {"error", "id"} and reply["id"] == echo
        assert set(reply["error"]) == {"code", "msg"} and reply["error"]["code"] == code
        assert isinstance(reply["error"]["msg"], str) and reply["error"]["msg"]
        _send(ws, "LIST_SUBSCRIPTIONS", msg_id=99)  # the connection stays usable
        assert _reply(ws, 99)[0] == {"result": [], "id": 99}


def test_combined_property_switches_raw_to_combined(sim):
    with _connect(f"{sim.url_ws}/ws/btcusdt@aggTrade") as ws:
        _send(ws, "GET_PROPERTY", ["combined"], 1)
        assert _reply(ws, 1)[0] == {"result": False, "id": 1}
        _send(ws, "SET_PROPERTY", ["combined", True], 2)
        assert _reply(ws, 2)[0] == {"result": None, "id": 2}
        frames = _read_for(ws, 0.6)
    assert frames and all(f["stream"] == "btcusdt@aggTrade" for f in frames)


def test_stream_limit_1024(sim):
    names = [f"sym{i}usdt@aggTrade" for i in range(1024)]
    with _connect(f"{sim.url_ws}/stream") as ws:
        _send(ws, "SUBSCRIBE", names, 1)
        assert _reply(ws, 1)[0] == {"result": None, "id": 1}
        _send(ws, "SUBSCRIBE", ["btcusdt@aggTrade"], 2)
        error = _reply(ws, 2)[0]["error"]
        assert error["code"] == 2 and "1024" in error["msg"]
        _send(ws, "LIST_SUBSCRIPTIONS", msg_id=3)
        assert len(_reply(ws, 3)[0]["result"]) == 1024


def test_too_many_streams_in_the_url_is_refused():
    sim = _run(max_streams=3)
    try:
        with _connect(f"{sim.url_ws}/stream?streams=a@aggTrade/b@aggTrade/c@aggTrade") as ws:
            _send(ws, "LIST_SUBSCRIPTIONS", msg_id=1)
            assert len(_reply(ws, 1)[0]["result"]) == 3
        with pytest.raises(InvalidStatus) as err:
            _connect(f"{sim.url_ws}/stream?streams=a@aggTrade/b@aggTrade/c@aggTrade/d@aggTrade")
        assert err.value.response.status_code == 400
    finally:
        sim.stop_in_thread()


def test_more_than_10_incoming_messages_per_second_disconnects(sim):
    with _connect(f"{sim.url_ws}/stream") as ws:
        for i in range(10):
            _send(ws, "LIST_SUBSCRIPTIONS", msg_id=i)
        for i in range(10):
            assert _reply(ws, i)[0]["id"] == i
        before = sim.fault_events["rate_limit_closes"]
        for i in range(10, 12):
            _send(ws, "LIST_SUBSCRIPTIONS", msg_id=i)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1008
    assert sim.fault_events["rate_limit_closes"] == before + 1


@pytest.mark.parametrize("path", ["/nope", "/market/other", "/market/stream/extra"])
def test_unknown_websocket_path_is_404(sim, path):
    with pytest.raises(InvalidStatus) as err:
        _connect(f"ws://127.0.0.1:{sim.port}{path}")
    assert err.value.response.status_code == 404


# -- keepalive and lifetime ------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_lived():
    sim = _run(symbols=("ETHUSDT",), rate=30.0, ping_interval_s=0.2, pong_timeout_s=0.4,
               max_lifetime_s=1.5)  # fmt: skip
    yield sim
    sim.stop_in_thread()


def _raw_frames(sock: socket.socket):
    """Yield (opcode, payload) of unmasked server frames from a raw socket."""
    buf = b""

    def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out

    while True:
        b0, b1 = need(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", need(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", need(8))[0]
        yield b0 & 0x0F, need(length)


def test_server_pings_and_drops_a_client_that_never_pongs(short_lived):
    sock = socket.create_connection(("127.0.0.1", short_lived.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (f"GET /market/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
         ).encode()
    )  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    opcodes = []
    for opcode, payload in _raw_frames(sock):
        opcodes.append(opcode)
        if opcode == 0x8:
            assert struct.unpack("!H", payload[:2])[0] == 1011  # keepalive ping timeout
            break
    sock.close()
    assert 0x9 in opcodes


def test_well_behaved_client_outlives_pings_until_max_lifetime(short_lived):
    before = short_lived.fault_events["lifetime_closes"]
    received = 0
    url = f"{short_lived.url_ws}/stream?streams=ethusdt@aggTrade"
    with _connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
            received += 1
    assert closed.value.rcvd.code == 1000 and "lifetime" in closed.value.rcvd.reason
    assert received > 0
    assert short_lived.fault_events["lifetime_closes"] == before + 1


# -- REST ------------------------------------------------------------------------------------


def test_rest_agg_trades_pages_return_the_history_exactly(sim):
    history = sim.history("ETHUSDT")
    assert len(history) > 1000
    first, last = int(history["agg_id"][0]), int(history["agg_id"][-1])
    rows = _all_rest_trades(sim, "ETHUSDT", first, last)
    assert [r["a"] for r in rows] == list(range(first, last + 1))
    for row, rec in zip(rows, history, strict=True):
        assert set(row) == {"a", "p", "q", "f", "l", "T", "m"}
        _assert_matches_history(row, rec, _precision(sim, "ETHUSDT"))


@pytest.mark.parametrize(("offset", "limit", "expect"), [(0, None, 500), (5, 1000, 1000),
                                                         (17, 1, 1), (3, 250, 250)])  # fmt: skip
def test_rest_from_id_is_inclusive_and_limit_bounded(sim, offset, limit, expect):
    first = int(sim.history("BTCUSDT")["agg_id"][0])
    params = {"symbol": "BTCUSDT", "fromId": first + offset}
    if limit is not None:
        params["limit"] = limit
    rows = _rest(sim, "/fapi/v1/aggTrades", **params).json()
    assert len(rows) == expect
    assert [r["a"] for r in rows] == list(range(first + offset, first + offset + expect))


def test_rest_time_window_and_latest(sim):
    history = sim.history("SOLUSDT")
    start, end = int(history["ts"][10]), int(history["ts"][10]) + 5_000
    rows = _rest(sim, "/fapi/v1/aggTrades", symbol="SOLUSDT", startTime=start, endTime=end,
                 limit=1000).json()  # fmt: skip
    expected = history[(history["ts"] >= start) & (history["ts"] <= end)]
    assert [r["a"] for r in rows] == expected["agg_id"].tolist()
    latest = _rest(sim, "/fapi/v1/aggTrades", symbol="SOLUSDT", limit=5).json()
    now_history = _by_id(sim.history("SOLUSDT"))
    assert len(latest) == 5 and all(r["a"] in now_history for r in latest)
    np.testing.assert_array_equal(np.diff([r["a"] for r in latest]), 1)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, -1102),
        ({"symbol": ""}, 400, -1102),
        ({"symbol": "NOPEUSDT"}, 400, -1121),
        ({"symbol": "BTCUSDT", "limit": 0}, 400, -1130),
        ({"symbol": "BTCUSDT", "limit": 1001}, 400, -1130),
        ({"symbol": "BTCUSDT", "limit": "ten"}, 400, -1130),
        ({"symbol": "BTCUSDT", "fromId": -1}, 400, -1130),
        ({"symbol": "BTCUSDT", "fromId": 1, "startTime": 1}, 400, -1128),
        ({"symbol": "BTCUSDT", "startTime": 0, "endTime": 3_600_001}, 400, -1127),
        ({"symbol": "BTCUSDT", "startTime": 10, "endTime": 5}, 400, -1128),
    ],
)
def test_rest_agg_trades_errors_have_binance_shape(sim, params, status, code):
    resp = _rest(sim, "/fapi/v1/aggTrades", **params)
    assert resp.status_code == status
    body = resp.json()
    assert set(body) == {"code", "msg"} and body["code"] == code and isinstance(body["msg"], str)
    assert int(resp.headers["X-MBX-USED-WEIGHT-1M"]) >= 0


@pytest.mark.parametrize("path", ["/fapi/v1/ticker/24hr", "/fapi/v1/premiumIndex"])
def test_rest_unknown_symbol_is_1121(sim, path):
    resp = _rest(sim, path, symbol="NOPEUSDT")
    assert resp.status_code == 400 and resp.json() == {"code": -1121, "msg": "Invalid symbol."}


def test_rest_exchange_info(sim):
    resp = _rest(sim, "/fapi/v1/exchangeInfo")
    assert resp.status_code == 200 and "X-MBX-USED-WEIGHT-1M" in resp.headers
    symbols = {s["symbol"]: s for s in resp.json()["symbols"]}
    assert set(symbols) == set(sim.symbols)
    for name, info in symbols.items():
        assert info["status"] == "TRADING" and info["contractType"] == "PERPETUAL"
        pp, qp = info["pricePrecision"], info["quantityPrecision"]
        assert isinstance(pp, int) and isinstance(qp, int)
        filters = {f["filterType"]: f for f in info["filters"]}
        tick, step = filters["PRICE_FILTER"]["tickSize"], filters["LOT_SIZE"]["stepSize"]
        assert isinstance(tick, str) and isinstance(step, str)
        for rec in sim.history(name)[:200]:
            assert Decimal(f"{rec['price']:.{pp}f}") % Decimal(tick) == 0
            assert Decimal(f"{rec['qty']:.{qp}f}") % Decimal(step) == 0


def test_rest_ticker_24hr_matches_history(sim):
    body = _rest(sim, "/fapi/v1/ticker/24hr", symbol="BNBUSDT").json()
    history = sim.history("BNBUSDT", body["openTime"], body["closeTime"] + 1)
    rows = history[(history["agg_id"] >= body["firstId"]) & (history["agg_id"] <= body["lastId"])]
    assert body["count"] == len(rows) == body["lastId"] - body["firstId"] + 1
    pp, qp = _precision(sim, "BNBUSDT")
    assert body["lastPrice"] == f"{rows['price'][-1]:.{pp}f}"
    assert body["openPrice"] == f"{rows['price'][0]:.{pp}f}"
    assert body["highPrice"] == f"{rows['price'].max():.{pp}f}"
    assert body["volume"] == f"{rows['qty'].sum():.{qp}f}"
    np.testing.assert_allclose(float(body["quoteVolume"]), np.dot(rows["price"], rows["qty"]),
                               atol=0.005)  # fmt: skip
    assert all(isinstance(body[k], str) for k in ("quoteVolume", "lastPrice", "priceChange"))
    everyone = _rest(sim, "/fapi/v1/ticker/24hr").json()
    assert {t["symbol"] for t in everyone} == set(sim.symbols)


def test_rest_premium_index(sim):
    body = _rest(sim, "/fapi/v1/premiumIndex", symbol="ETHUSDT").json()
    assert body["symbol"] == "ETHUSDT" and body["nextFundingTime"] % EIGHT_HOURS_MS == 0
    assert 0 < body["nextFundingTime"] - body["time"] <= EIGHT_HOURS_MS
    for key in ("markPrice", "indexPrice", "lastFundingRate", "interestRate"):
        assert isinstance(body[key], str) and math.isfinite(float(body[key]))
    assert len(_rest(sim, "/fapi/v1/premiumIndex").json()) == len(sim.symbols)


@pytest.mark.parametrize("path", ["/fapi/v1/nothing", "/", "/api/v3/aggTrades"])
def test_rest_unknown_path_is_404(sim, path):
    resp = _rest(sim, path)
    assert resp.status_code == 404 and "X-MBX-USED-WEIGHT-1M" in resp.headers


def test_rest_weight_limit_answers_429_with_retry_after():
    sim = _run(rest_weight_limit=50, history_s=2.0)
    try:
        codes = [_rest(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        resp = _rest(sim, "/fapi/v1/aggTrades", symbol="BTCUSDT")
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
        assert resp.json()["code"] == -1003 and int(resp.headers["X-MBX-USED-WEIGHT-1M"]) > 50
    finally:
        sim.stop_in_thread()


# -- faults ----------------------------------------------------------------------------------


def test_rest_429_every_nth_request():
    sim = _run(rest_429_every=3)
    try:
        codes = [_rest(sim, "/fapi/v1/exchangeInfo").status_code for _ in range(7)]
        assert codes == [200, 200, 429, 200, 200, 429, 200]
        assert sim.fault_events["rest_429"] == 2
    finally:
        sim.stop_in_thread()


def test_dropped_trades_leave_gaps_that_rest_refills():
    sim = _run(drop_rate=0.2, rate=80.0)
    try:
        with _connect(f"{sim.url_ws}/stream?streams=btcusdt@aggTrade") as ws:
            frames = _read_for(ws, 1.5)
            _send(ws, "UNSUBSCRIBE", ["btcusdt@aggTrade"], 1)
            frames += _reply(ws, 1)[1]
        ids = [p["a"] for p in _payloads(frames)]
        assert ids == sorted(set(ids))
        missing = sorted(set(range(ids[0], ids[-1] + 1)) - set(ids))
        assert missing and len(missing) <= sim.fault_events["dropped"]
        history = _by_id(sim.history("BTCUSDT"))
        for p in _payloads(frames):
            _assert_matches_history(p, history[p["a"]], _precision(sim, "BTCUSDT"))
        refill = {r["a"]: r for r in _all_rest_trades(sim, "BTCUSDT", missing[0], missing[-1])}
        for a in missing:
            _assert_matches_history(refill[a], history[a], _precision(sim, "BTCUSDT"))
        assert sum(sim.injected.values()) == 0
    finally:
        sim.stop_in_thread()


@pytest.mark.parametrize("kinds", [REJECT_REASONS, ("bad_price", "bad_qty"), ("not_json",)])
def test_corrupt_frames_are_counted_exactly_per_reason(kinds):
    sim = _run(corrupt_rate=0.35, corrupt_kinds=kinds, rate=80.0)
    try:
        with _connect(f"{sim.url_ws}/stream?streams=btcusdt@aggTrade") as ws:
            texts = []
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                texts.append(ws.recv(timeout=5))
            _send(ws, "UNSUBSCRIBE", ["btcusdt@aggTrade"], "stop")
            while True:
                text = ws.recv(timeout=5)
                if text == '{"result":null,"id":"stop"}':
                    break
                texts.append(text)
        counts = dict.fromkeys(REJECT_REASONS, 0)
        valid: list[int] = []
        for text in texts:
            reason = _classify(text, "BTCUSDT", valid)
            if reason is not None:
                counts[reason] += 1
        assert counts == sim.injected
        assert all(counts[k] > 0 for k in kinds)
        assert all(counts[k] == 0 for k in REJECT_REASONS if k not in kinds)
        # every trade a corrupt frame carried is in the history and served by REST
        history = _by_id(sim.history("BTCUSDT"))
        missing = sorted(set(range(valid[0], valid[-1] + 1)) - set(valid))
        if set(kinds) - {"duplicate"}:
            assert missing
        refill = {r["a"] for r in _all_rest_trades(sim, "BTCUSDT", valid[0], valid[-1])}
        assert set(missing) <= refill and all(a in history for a in missing)
    finally:
        sim.stop_in_thread()


def test_duplicates_resend_earlier_valid_frames():
    sim = _run(duplicate_rate=0.2, rate=80.0)
    try:
        with _connect(f"{sim.url_ws}/stream?streams=ethusdt@aggTrade") as ws:
            texts = [ws.recv(timeout=5) for _ in range(150)]
            _send(ws, "UNSUBSCRIBE", ["ethusdt@aggTrade"], 1)
            texts += [orjson.dumps(f).decode() for f in _reply(ws, 1)[1]]
        seen: set[str] = set()
        ids: list[int] = []
        dups = 0
        for text in texts:
            a = orjson.loads(text)["data"]["a"]
            if ids and a <= ids[-1]:
                assert text in seen  # an exact re-send of a frame already delivered
                dups += 1
            else:
                ids.append(a)
                seen.add(text)
        assert dups > 0 and dups == sim.injected["duplicate"]
        np.testing.assert_array_equal(np.diff(ids), 1)  # nothing else is lost
    finally:
        sim.stop_in_thread()


def test_periodic_disconnects_close_and_reconnect_works():
    sim = _run(disconnect_every_s=0.6, rate=40.0)
    try:
        for _ in range(2):
            url = f"{sim.url_ws}/stream?streams=btcusdt@aggTrade"
            with _connect(url) as ws, pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1001
        assert sim.fault_events["disconnects"] == 2
    finally:
        sim.stop_in_thread()


def test_silent_symbol_goes_quiet_until_resubscribed():
    sim = _run(silent_symbol="BTCUSDT", silent_after_s=0.5, rate=60.0)
    try:
        streams = "btcusdt@aggTrade/ethusdt@aggTrade"
        with _connect(f"{sim.url_ws}/stream?streams={streams}") as ws:
            frames = _read_for(ws, 1.8)
            btc = _payloads(frames, "btcusdt@aggTrade")
            last_btc = max(i for i, f in enumerate(frames) if f["stream"] == "btcusdt@aggTrade")
            assert btc and len(_payloads(frames[last_btc:], "ethusdt@aggTrade")) > 20
            assert sim.fault_events["silenced"] > 0
            _send(ws, "SUBSCRIBE", ["btcusdt@aggTrade"], 2)
            after = _reply(ws, 2)[1] + _read_for(ws, 0.4)
            resumed = _payloads(after, "btcusdt@aggTrade")
            assert resumed and resumed[0]["a"] > btc[-1]["a"] + 1  # a gap REST can refill
            rest = _all_rest_trades(sim, "BTCUSDT", btc[-1]["a"] + 1, resumed[0]["a"] - 1)
            assert [r["a"] for r in rest] == list(range(btc[-1]["a"] + 1, resumed[0]["a"]))
    finally:
        sim.stop_in_thread()


def test_wedged_symbol_stays_quiet_after_resubscribe_until_a_new_connection():
    sim = _run(silent_symbol="BTCUSDT", silent_after_s=0.5, silent_until="reconnect", rate=60.0)
    try:
        streams = "btcusdt@aggTrade/ethusdt@aggTrade"
        url = f"{sim.url_ws}/stream?streams={streams}"
        with _connect(url) as ws:
            first = _read_for(ws, 0.9)
            btc = _payloads(first, "btcusdt@aggTrade")
            assert btc and sim.fault_events["silenced"] > 0
            for msg_id, method in ((1, "UNSUBSCRIBE"), (2, "SUBSCRIBE")):
                _send(ws, method, ["btcusdt@aggTrade"], msg_id)
                assert _reply(ws, msg_id)[0] == {"result": None, "id": msg_id}
            after = _read_for(ws, 0.6)
            assert _payloads(after, "btcusdt@aggTrade") == []  # still wedged
            assert len(_payloads(after, "ethusdt@aggTrade")) > 10  # while others flow
        with _connect(url) as ws:  # a new connection revives it
            resumed = _payloads(_read_for(ws, 0.4), "btcusdt@aggTrade")
        assert resumed and resumed[0]["a"] > btc[-1]["a"] + 1
        rest = _all_rest_trades(sim, "BTCUSDT", btc[-1]["a"] + 1, resumed[0]["a"] - 1)
        assert [r["a"] for r in rest] == list(range(btc[-1]["a"] + 1, resumed[0]["a"]))
    finally:
        sim.stop_in_thread()


def test_slow_consumer_pauses_then_delivers_the_backlog_intact():
    sim = _run(slow_consumer=0.6, slow_every_s=0.3, rate=60.0)
    try:
        with _connect(f"{sim.url_ws}/stream?streams=ethusdt@aggTrade") as ws:
            lags, ids = [], []
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                data = orjson.loads(ws.recv(timeout=5))["data"]
                lags.append(time.time() * 1000 - data["E"])
                ids.append(data["a"])
        assert sim.fault_events["slow_pauses"] >= 1
        assert max(lags) >= 400  # frames waited in the server's queue during the pause
        np.testing.assert_array_equal(np.diff(ids), 1)
    finally:
        sim.stop_in_thread()


# -- settings, errors, config and CLI ----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"symbols": ()},
        {"symbols": ("btcusdt",)},
        {"symbols": ("BTCUSDT", "BTCUSDT")},
        {"rate": -1.0},
        {"rate": math.nan},
        {"seed": -1},
        {"port": 70_000},
        {"ping_interval_s": 0},
        {"max_lifetime_s": -5},
        {"max_streams": 0},
        {"faults": {"silent_symbol": "SOLUSDT"}, "symbols": ("BTCUSDT",)},
        {"listings": {"SOLUSDT": T0}, "symbols": ("BTCUSDT",)},
        {"history_days": -1.0},
    ],
)
def test_bad_settings_raise_config_error(kwargs):
    kwargs = dict(kwargs)
    symbols = kwargs.pop("symbols", ("BTCUSDT", "ETHUSDT"))
    with pytest.raises(ConfigError):
        Simulator(parse_simulator(kwargs), symbols)


def test_a_listing_of_a_symbol_the_simulator_lacks_names_the_key():
    config = SimulatorConfig(listings={"BTCUSDT": T0, "SOLUSDT": T0})
    with pytest.raises(ConfigError, match=r"^simulator\.listings\.SOLUSDT: .*'SOLUSDT'"):
        Simulator(config, ("BTCUSDT", "ETHUSDT"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_rate": 1.5},
        {"corrupt_rate": -0.1},
        {"drop_rate": 0.6, "corrupt_rate": 0.6},
        {"corrupt_kinds": ("not_json", "bogus")},
        {"corrupt_kinds": ()},
        {"disconnect_every_s": 0},
        {"silent_symbol": "bad symbol"},
        {"silent_until": "forever"},
        {"rest_429_every": -1},
        {"slow_consumer": -1.0},
    ],
)
def test_bad_faults_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        parse_simulator({"faults": kwargs})


@pytest.mark.parametrize(
    "groups",
    [(("BTCUSDT",),), (("BTCUSDT", "ETHUSDT"), ("ETHUSDT",)), (("BTCUSDT", "ETHUSDT"), ())],
)
def test_bad_groups_raise_config_error(groups):
    with pytest.raises(ConfigError):
        Market(["BTCUSDT", "ETHUSDT"], groups=groups)


def test_explicit_groups_are_used():
    market = Market(["BTCUSDT", "ETHUSDT", "SOLUSDT"], groups=[["SOLUSDT", "BTCUSDT", "ETHUSDT"]])
    assert market.truth("ETHUSDT").leader == "SOLUSDT" and market.truth("BTCUSDT").beta != 1.0


def test_market_and_simulator_misuse_raise_typed_errors():
    market = Market(["BTCUSDT"])
    with pytest.raises(DataError):
        market.trades("ETHUSDT", T0, T0 + 1000)
    with pytest.raises(DataError):
        market.mark_at("BTCUSDT", 0)  # before the market's epoch
    assert market.trades("BTCUSDT", T0, T0 - 1).size == 0
    with pytest.raises(DataError):
        market.truth("ETHUSDT")
    sim = Simulator(SimulatorConfig(), ("BTCUSDT",))
    with pytest.raises(FeedError):
        _ = sim.port
    with pytest.raises(DataError):
        sim.history("ETHUSDT")


def test_port_in_use_is_a_feed_error(sim):
    other = Simulator(SimulatorConfig(port=sim.port), ("BTCUSDT",))
    with pytest.raises(FeedError):
        other.start_in_thread()


def test_simulator_takes_the_engine_config_section():
    config = SimulatorConfig(seed=3, rate=2.0, groups=(("ETHUSDT", "BTCUSDT"),),
                             faults=FaultsConfig(drop_rate=0.2, slow_consumer=2.5))  # fmt: skip
    sim = Simulator(config, ("BTCUSDT", "ETHUSDT"))
    assert sim.config.groups == (("ETHUSDT", "BTCUSDT"),) and sim.config.seed == 3
    assert sim.config.faults.drop_rate == 0.2 and sim.config.faults.slow_consumer_s == 2.5
    assert FaultsConfig(slow_consumer=True).slow_consumer_s == 1.0
    assert FaultsConfig().slow_consumer_s == 0.0
    assert sim.market.truth("BTCUSDT").leader == "ETHUSDT"


def test_cli_arguments_build_settings():
    import argparse

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--symbols", "btcusdt", "ethusdt", "--seed", "4", "--rate", "9",
                              "--drop-rate", "0.1", "--corrupt-rate", "0.05",
                              "--silent-symbol", "ethusdt", "--silent-until", "reconnect",
                              "--disconnect-every", "60"])  # fmt: skip
    settings, symbols = settings_from_args(args)
    assert symbols == ("BTCUSDT", "ETHUSDT") and (settings.seed, settings.rate) == (4, 9.0)
    assert settings.faults.drop_rate == 0.1 and settings.faults.silent_symbol == "ETHUSDT"
    assert settings.faults.silent_until == "reconnect"
    assert settings.faults.disconnect_every_s == 60.0 and settings.port == 0
    assert settings.history_days == 30.0  # the documented default
    settings, _ = settings_from_args(parser.parse_args(["--history-days", "2.5"]))
    assert settings.history_days == 2.5


def test_pairstack_sim_history_days_sets_how_far_back_rest_and_the_archive_go(tmp_path):
    before = int(time.time() * 1000)
    proc = subprocess.Popen(
        pairstack("sim", "--symbols", "ETHUSDT", "--rate", "1", "--history-days", "2"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=scrubbed_env(tmp_path / "home"),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        after = int(time.time() * 1000)
        base = line.split("websocket ")[1].split("/market")[0].replace("ws://", "http://")
        assert "2 days of history" in proc.stdout.readline() + proc.stdout.readline()
        first = httpx.get(f"{base}/fapi/v1/aggTrades",
                          params={"symbol": "ETHUSDT", "fromId": 0, "limit": 1},
                          timeout=30).json()[0]  # fmt: skip
        # the history starts 2 days before the start, on the 10 s block grid
        two_days = 2 * 86_400_000
        assert (before - two_days) // 10_000 * 10_000 <= first["T"] < after - two_days + 10_000
        day = 86_400_000
        today = after // day * day

        def daily(day_ms: int) -> int:
            date = time.strftime("%Y-%m-%d", time.gmtime(day_ms / 1000))
            path = f"/data/futures/um/daily/klines/ETHUSDT/1h/ETHUSDT-1h-{date}.zip"
            return httpx.get(f"{base}{path}", timeout=60).status_code

        assert daily(today - day) == 200  # yesterday: inside the 2 days
        assert daily(today - 3 * day) == 404  # before the history
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    bad = subprocess.run(
        pairstack("sim", "--history-days", "-1"), capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env=scrubbed_env(tmp_path / "home"),
    )  # fmt: skip
    assert bad.returncode == 2 and "history_days" in bad.stderr, bad.stderr


def test_pairstack_sim_command_serves_until_interrupted(tmp_path):
    proc = subprocess.Popen(
        pairstack("sim", "--symbols", "BTCUSDT", "SOLUSDT", "--rate", "20", "--drop-rate", "0.1"),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=scrubbed_env(tmp_path / "home"),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert "websocket ws://127.0.0.1:" in line
        base = line.split("websocket ")[1].split("/market")[0].replace("ws://", "http://")
        info = httpx.get(f"{base}/fapi/v1/exchangeInfo", timeout=10).json()
        assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "SOLUSDT"]
        ws_base = line.split("websocket ")[1].split("/stream")[0]
        with _connect(f"{ws_base}/stream?streams=solusdt@aggTrade") as ws:
            frame = orjson.loads(ws.recv(timeout=10))
        assert frame["stream"] == "solusdt@aggTrade" and frame["data"]["s"] == "SOLUSDT"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
