"""The simulator server: websocket market streams and REST on one loopback host:port.

Websocket paths (Binance's routed USD-M endpoints): ``/market/stream?streams=a/b`` (combined frames
``{"stream": name, "data": payload}``), ``/market/ws[/<stream>...]`` (raw payloads). The
unrouted ``/stream``, ``/ws`` (and ``/public/...``, ``/private/...``) accept connections and
control messages but deliver no market stream, like the real exchange. A plain HTTP GET under
``/data/`` is answered by the public-data ``Archive``, any other by ``RestApi``. One asyncio task
steps the clock every ``step_ms``, takes the market's trades of the elapsed span and fans them out
to per-connection send queues; markPrice is pushed on whole seconds. The market is a function of
the seed and wall time (``Market``): the live stream continues the history's ids, and a restarted
simulator serves the same trades for any time both runs cover.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.binance import REJECT_REASONS, check_symbol
from engine.config import SimulatorConfig
from engine.errors import ConfigError, DataError, FeedError
from engine.simulator.archive import Archive
from engine.simulator.faults import DELIVER, DROP, FaultInjector, dumps, truncate
from engine.simulator.market import BLOCK_MS, DAY_MS, Market, next_funding_ms
from engine.simulator.rest import RestApi, RestResponse
from engine.simulator.wire import (
    AGG_TRADE,
    MARK_PERIOD_MS,
    agg_trade_payloads,
    mark_payload,
    parse_stream,
)

log = logging.getLogger(__name__)

#: Counters of faults and limits that are not client reject reasons (``Simulator.fault_events``).
EVENTS: tuple[str, ...] = (
    "dropped",
    "silenced",
    "disconnects",
    "lifetime_closes",
    "rate_limit_closes",
    "rest_429",
    "slow_pauses",
)
#: The symbols a simulator serves unless told otherwise.
DEFAULT_SYMBOLS: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
_RECENT_FRAMES = 8
_METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Route(NamedTuple):
    """A websocket path: routed (``/market``) or not, combined or raw, streams in the URL."""

    routed: bool
    combined: bool
    streams: tuple[str, ...]


def parse_route(target: str) -> Route | None:
    """Route of a websocket request target (path and query), None for an unknown path."""
    parts = urlsplit(target)
    segments = [s for s in parts.path.split("/") if s]
    base = segments[0] if segments and segments[0] in ("market", "public", "private") else None
    rest = segments[1:] if base else segments
    routed = base == "market"
    if rest == ["stream"]:
        query = dict(parse_qsl(parts.query))
        streams = tuple(s for s in query.get("streams", "").split("/") if s)
        return Route(routed, True, streams)
    if rest and rest[0] == "ws":
        return Route(routed, False, tuple(rest[1:]))
    return None


@dataclass(eq=False)
class _Conn:
    """State of one websocket connection."""

    ws: ServerConnection
    routed: bool
    combined: bool
    streams: dict[str, float] = field(default_factory=dict)  # name -> monotonic time subscribed
    first_subscribed: dict[str, float] = field(default_factory=dict)  # kept across UNSUBSCRIBE
    by_symbol: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (sym, kind)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    recent: dict[str, collections.deque] = field(default_factory=dict)  # sym -> valid frames
    incoming: collections.deque = field(default_factory=collections.deque)

    def subscribe(self, name: str, now: float) -> None:
        if name not in self.streams:
            stream = parse_stream(name)
            if stream is not None:
                self.by_symbol.setdefault((stream.symbol, stream.kind), []).append(name)
        self.streams[name] = now
        self.first_subscribed.setdefault(name, now)

    def unsubscribe(self, name: str) -> None:
        if self.streams.pop(name, None) is None:
            return
        stream = parse_stream(name)
        if stream is not None:
            self.by_symbol[(stream.symbol, stream.kind)].remove(name)

    def frame(self, name: str, payload: dict) -> bytes:
        return orjson.dumps({"stream": name, "data": payload} if self.combined else payload)


class Simulator:
    """Local exchange simulator speaking Binance's USD-M wire protocol on loopback.

    ``history(symbol)`` holds the trades made since ``history_s`` before the start (also the
    ones a fault kept off the stream); ``injected`` counts the frames sent per client reject
    reason; ``fault_events`` counts the other faults and limits (see ``EVENTS``).
    """

    def __init__(
        self, config: SimulatorConfig | None = None, symbols: Sequence[str] = DEFAULT_SYMBOLS
    ) -> None:
        self.config = s = config or SimulatorConfig()
        self.symbols = tuple(check_symbol(sym, ConfigError) for sym in symbols)
        refs = [(f"listings.{sym}", sym) for sym in s.listings]
        refs.append(("faults.silent_symbol", s.faults.silent_symbol))
        for key, sym in refs:
            if sym is not None and sym not in self.symbols:
                raise ConfigError(
                    f"simulator.{key}: expected one of the simulator's symbols "
                    f"{list(self.symbols)}, got {sym!r}"
                )
        self.market = Market(self.symbols, seed=s.seed, rate=s.rate, groups=s.groups,
                             listings=s.listings)  # fmt: skip
        self.started_ms: int | None = None
        self._served_ms: int | None = None  # trades with T < this were published
        self._faults = FaultInjector(s.faults, s.seed)
        self.injected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.fault_events: dict[str, int] = dict.fromkeys(EVENTS, 0)
        self._rest = RestApi(self.market, self._span, s.faults, s.rest_weight_limit,
                             self._count_event)  # fmt: skip
        self._archive = Archive(self.market, self._history_start)
        self._server: Server | None = None
        self._ticker: asyncio.Task | None = None
        self._conns: set[_Conn] = set()
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None

    # -- addresses and state --------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise FeedError("simulator not started: no port yet")
        return self._port

    @property
    def url_ws(self) -> str:
        """Routed websocket base, e.g. ``ws://127.0.0.1:PORT/market``."""
        return f"ws://{self.config.host}:{self.port}/market"

    @property
    def url_rest(self) -> str:
        """REST base, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Open websocket connections."""
        return len(self._conns)

    def history(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> np.ndarray:
        """Trades of ``symbol`` with ``start_ms <= T < end_ms`` (TICK_DTYPE, consecutive ids).

        Defaults: from ``history_s`` before the start to the last trade published so far.
        """
        if symbol not in self.market.specs:
            raise DataError(
                f"unknown symbol {symbol!r}: simulator has {list(self.symbols)}"
            )
        if self.started_ms is None or self._served_ms is None:
            raise FeedError("simulator not started: no history yet")
        if start_ms is None:
            start_ms = self.started_ms - int(self.config.history_s * 1000)
        start_ms = max(start_ms, self._history_start())
        return self.market.trades(symbol, start_ms, self._served_ms if end_ms is None else end_ms)

    def _span(self) -> tuple[int, int]:
        """(first ms of the history, end ms (exclusive) of the trades published so far)."""
        if self._served_ms is None:
            raise FeedError("simulator not started: no history yet")
        return self._history_start(), self._served_ms

    def _history_start(self) -> int:
        """First ms of the market's past: the start minus ``history_days`` (on the block grid)."""
        if self.started_ms is None:
            raise FeedError("simulator not started: no history yet")
        days_ms = int(self.config.history_days * DAY_MS)
        return (self.started_ms - days_ms) // BLOCK_MS * BLOCK_MS

    def _count_event(self, name: str, n: int = 1) -> None:
        self.fault_events[name] += n

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start the market clock (the past is served from ``history_days``
        before now)."""
        if self._server is not None:
            raise FeedError("simulator already started")
        s = self.config
        self.started_ms = _now_ms()
        self._served_ms = self.started_ms + 1
        for sym in self.symbols:  # make the current hour now, not in the first live step
            self.market.trades(sym, self.started_ms, self._served_ms)
        try:
            self._server = await serve(
                self._handle,
                s.host,
                s.port,
                process_request=self._process_request,
                ping_interval=s.ping_interval_s,
                ping_timeout=s.pong_timeout_s,
                compression=None,
            )
        except OSError as exc:
            raise FeedError(f"simulator cannot listen on {s.host}:{s.port}: {exc}") from exc
        self._port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._run_market(), name="simulator-market")
        self._ticker.add_done_callback(_log_crash)
        log.info("simulator serving %s and %s", self.url_ws, self.url_rest)

    async def stop(self) -> None:
        """Stop the market clock, close every connection and the listening socket."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout_s: float = 10.0) -> Simulator:
        """Run the simulator on its own event loop in a daemon thread (for sync callers)."""
        if self._thread is not None:
            raise FeedError("simulator already running in a thread")
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[Exception] = []

        def runner() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except Exception as exc:  # handed to the caller's thread below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread_loop = loop
        self._thread = threading.Thread(target=runner, name="pairstack-simulator", daemon=True)
        self._thread.start()
        if not started.wait(timeout_s):
            raise FeedError(f"simulator did not start within {timeout_s} s")
        if failure:
            self._thread = self._thread_loop = None
            raise failure[0]
        return self

    def stop_in_thread(self, timeout_s: float = 10.0) -> None:
        """Stop a simulator started with ``start_in_thread`` and join its thread."""
        if self._thread is None or self._thread_loop is None:
            return
        loop = self._thread_loop
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout_s)
        self._thread = self._thread_loop = None

    def __enter__(self) -> Simulator:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_in_thread()

    # -- market clock ---------------------------------------------------------------------

    async def _run_market(self) -> None:
        step = self.config.step_ms
        last_second = _now_ms() // 1000
        while True:
            now = _now_ms()
            await asyncio.sleep(((now // step + 1) * step - now) / 1000.0)
            now = _now_ms()
            served, self._served_ms = self._served_ms, now + 1
            for sym in self.symbols:
                ticks = self.market.trades(sym, served, now + 1)
                if len(ticks):
                    self._publish_trades(sym, ticks, now)
            second = now // 1000
            if second != last_second:
                last_second = second
                self._publish_marks(second * 1000)

    def _silent(self, conn: _Conn, symbol: str, name: str, now: float) -> bool:
        f = self.config.faults
        if f.silent_symbol != symbol:
            return False
        since = conn.first_subscribed if f.silent_until == "reconnect" else conn.streams
        return now - since[name] > f.silent_after_s

    def _publish_trades(self, symbol: str, ticks: np.ndarray, now_ms: int) -> None:
        payloads = None
        mono = time.monotonic()
        for conn in self._conns:
            names = conn.by_symbol.get((symbol, AGG_TRADE)) if conn.routed else None
            for name in names or ():
                if self._silent(conn, symbol, name, mono):
                    self.fault_events["silenced"] += len(ticks)
                    continue
                if payloads is None:
                    payloads = agg_trade_payloads(symbol, ticks, self.market.specs[symbol], now_ms)
                self._send_trades(conn, symbol, name, payloads)

    def _send_trades(self, conn: _Conn, symbol: str, name: str, payloads: list[dict]) -> None:
        faults = self._faults
        recent = conn.recent.setdefault(symbol, collections.deque(maxlen=_RECENT_FRAMES))
        for payload in payloads:
            action, duplicate = faults.plan() if faults.active else (DELIVER, False)
            if action == DELIVER:
                frame = conn.frame(name, payload).decode()
                conn.queue.put_nowait((frame, None))
                recent.append(frame)
            elif action == DROP:
                self.fault_events["dropped"] += 1
            else:
                bad = faults.corrupt_payload(action, payload, "X" + symbol)
                raw = conn.frame(name, payload if bad is None else bad)
                conn.queue.put_nowait((truncate(raw) if bad is None else raw.decode(), action))
            if duplicate and recent:
                conn.queue.put_nowait((recent[faults.pick(len(recent))], "duplicate"))

    def _publish_marks(self, second_ms: int) -> None:
        mono = time.monotonic()
        cache: dict[str, dict] = {}
        for conn in self._conns:
            if not conn.routed:
                continue
            for (symbol, kind), names in conn.by_symbol.items():
                period = MARK_PERIOD_MS.get(kind)
                if period is None or second_ms % period or symbol not in self.market.specs:
                    continue
                for name in names:
                    if self._silent(conn, symbol, name, mono):
                        continue
                    payload = cache.get(symbol)
                    if payload is None:
                        payload = cache[symbol] = mark_payload(
                            symbol, self.market.mark_at(symbol, second_ms),
                            self.market.specs[symbol],
                            second_ms, next_funding_ms(second_ms),
                        )  # fmt: skip
                    conn.queue.put_nowait((conn.frame(name, payload).decode(), None))

    # -- connections ----------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            if request.path.startswith("/data/"):
                return _http_response(self._archive.handle(urlsplit(request.path).path, _now_ms()))
            return _http_response(self._rest.handle(request.path, _now_ms()))
        route = parse_route(request.path)
        if route is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        if len(route.streams) > self.config.max_streams:
            return connection.respond(
                http.HTTPStatus.BAD_REQUEST,
                f"Too many streams: {len(route.streams)} > {self.config.max_streams}\n",
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        route = parse_route(ws.request.path)
        assert route is not None  # checked in _process_request
        conn = _Conn(ws, route.routed, route.combined)
        now = time.monotonic()
        for name in route.streams:
            conn.subscribe(name, now)
        self._conns.add(conn)
        tasks = [asyncio.create_task(self._read_loop(conn)),
                 asyncio.create_task(self._send_loop(conn))]  # fmt: skip
        s = self.config
        every = s.faults.disconnect_every_s
        limit = s.max_lifetime_s if every is None else min(every, s.max_lifetime_s)
        try:
            done, _ = await asyncio.wait(tasks, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                if every is not None and every < s.max_lifetime_s:
                    self.fault_events["disconnects"] += 1
                    await ws.close(1001, "simulated disconnect")
                else:
                    self.fault_events["lifetime_closes"] += 1
                    await ws.close(1000, "connection lifetime reached")
        finally:
            self._conns.discard(conn)
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception) and not isinstance(result, ConnectionClosed):
                    log.error("simulator connection task failed: %r", result)

    async def _read_loop(self, conn: _Conn) -> None:
        limit = self.config.max_incoming_per_s
        async for message in conn.ws:
            now = time.monotonic()
            conn.incoming.append(now)
            while conn.incoming[0] <= now - 1.0:
                conn.incoming.popleft()
            if len(conn.incoming) > limit:
                self.fault_events["rate_limit_closes"] += 1
                await conn.ws.close(1008, "Too many requests")
                return
            conn.queue.put_nowait((dumps(self._control(conn, message)), None))

    async def _send_loop(self, conn: _Conn) -> None:
        f = self.config.faults
        next_pause = time.monotonic() + f.slow_every_s if f.slow_consumer_s > 0 else math.inf
        while True:
            frame, tag = await conn.queue.get()
            if time.monotonic() >= next_pause:
                self.fault_events["slow_pauses"] += 1
                await asyncio.sleep(f.slow_consumer_s)
                next_pause = time.monotonic() + f.slow_every_s
            await conn.ws.send(frame)
            if tag is not None:
                self.injected[tag] += 1

    def _control(self, conn: _Conn, message: str | bytes) -> dict:
        """Reply to one control message (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, ...)."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError:
            return _error(3, "Invalid JSON: expected value at line 1 column 1", None)
        if not isinstance(request, dict):
            return _error(2, "Invalid request: expected a JSON object", None)
        msg_id = request.get("id")
        if msg_id is not None and (
            isinstance(msg_id, bool)
            or not isinstance(msg_id, (int, str))
            or (isinstance(msg_id, int) and msg_id < 0)
        ):
            return _error(2, "Invalid request: request ID must be an unsigned integer or a string",
                          None)  # fmt: skip
        unknown = sorted(set(request) - {"method", "params", "id"})
        if unknown:
            return _error(2, f"Invalid request: unknown field `{unknown[0]}`", msg_id)
        method, params = request.get("method"), request.get("params")
        if method is None:
            return _error(2, "Invalid request: missing field `method`", msg_id)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not (
                isinstance(params, list)
                and params
                and all(isinstance(p, str) and parse_stream(p) is not None for p in params)
            ):
                return _error(2, "Invalid request: params must be a non-empty list of stream "
                              "names such as 'btcusdt@aggTrade'", msg_id)  # fmt: skip
            if method == "UNSUBSCRIBE":
                for name in params:
                    conn.unsubscribe(name)
                return {"result": None, "id": msg_id}
            total = len(set(conn.streams) | set(params))
            if total > self.config.max_streams:
                return _error(2, f"Invalid request: too many streams ({total}); the limit is "
                              f"{self.config.max_streams} per connection", msg_id)  # fmt: skip
            now = time.monotonic()
            for name in params:
                conn.subscribe(name, now)
            return {"result": None, "id": msg_id}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": msg_id}
        if method == "SET_PROPERTY":
            if (isinstance(params, list) and len(params) == 2 and params[0] == "combined"
                    and isinstance(params[1], bool)):  # fmt: skip
                conn.combined = params[1]
                return {"result": None, "id": msg_id}
            return _error(1, "Invalid value type: expected Boolean", msg_id)
        if method == "GET_PROPERTY":
            if params == ["combined"]:
                return {"result": conn.combined, "id": msg_id}
            return _error(0, "Unknown property", msg_id)
        return _error(2, f"Invalid request: unknown variant `{method}`, expected one of {_METHODS}",
                      msg_id)  # fmt: skip


def _error(code: int, msg: str, msg_id: int | str | None) -> dict:
    return {"error": {"code": code, "msg": msg}, "id": msg_id}


def _http_response(resp: RestResponse) -> Response:
    """The HTTP answer; JSON unless the response names its own Content-Type."""
    status = http.HTTPStatus(resp.status)
    named = {k.lower() for k, _ in resp.headers}
    json_type = (
        () if "content-type" in named else (("Content-Type", "application/json;charset=UTF-8"),)
    )
    headers = Headers(
        [
            *json_type,
            ("Content-Length", str(len(resp.body))),
            ("Connection", "close"),
            *resp.headers,
        ]
    )
    return Response(status.value, status.phrase, headers, resp.body)


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("simulator market clock stopped", exc_info=task.exception())
