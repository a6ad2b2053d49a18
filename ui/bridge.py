"""One server-wide bridge: polls the Hub into a cache that every session renders from.

A daemon thread asks the Hub, every ``interval_s`` (0.5 s), for its status (light rows of
every pair), the alerts fired since the last poll, the snapshots of the pairs sessions are
looking at (``watch``; only the steps after the cached ones) and the recent bars that sessions
asked for (``want``; after the first fetch only the bars since the cached ones), and swaps in a
new immutable :class:`Cache`, shared by every session. The symbols' bars for the liquidity
filter and the screen are refreshed every ``universe_every_s``, with the newest saved screen
of the store (``engine.screen.latest_screen``, read again only when the folder changed). The
live pairs come from the Hub on every poll (pairs added at run time appear). A pair or bars
asked for the first time wake the poller at once.

Sessions never call Ray: what they ask of the engine (alert rules, pairs to watch live, a
backtest, a screen) they hand to the bridge as a :class:`Job`; the bridge's thread starts it on
Ray (a Hub call, a Ray task, a ``ScreenJob`` actor), watches its ObjectRef with ``ray.wait``
(no timeout) on every loop and stores the outcome (or the error) in the Job, which the session
reads on a later tick. When a poll fails the cache keeps the last numbers and says since when it
has failed; ``health`` turns a cache into what the page must say (live, feed down, feed
unhealthy, engine unreachable).
"""

from __future__ import annotations

import html
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.bars import RECENT_BARS
from engine.schemas import timeframe_ms
from engine.screen import SCREENS_DIR, latest_screen

log = logging.getLogger(__name__)

#: bars kept per (symbol, timeframe) requested by a session
WANTED_BARS = RECENT_BARS
#: bars per symbol for the universe (liquidity, heatmap, screen)
UNIVERSE_BARS = 900
#: a requested (symbol, timeframe) or watched pair is dropped when no session asked for it
#: this long (s)
WANT_TTL_S = 30.0
#: bars asked for beyond those elapsed since the last cached bar (late or re-sent bars)
BARS_MARGIN = 5
#: seconds without a successful poll before the engine is reported unreachable
UNREACHABLE_S = 5.0
#: seconds after a pair's last bar end before its numbers count as stale (plus one bar)
STALE_S = 15.0
#: characters of a feed's last connection error shown in the banner
ERROR_CHARS = 160


@dataclass(frozen=True)
class Cache:
    """Everything the sessions render, as of one poll."""

    seq: int = 0
    polled_at: float = 0.0  # wall s of the last successful poll
    error: str | None = None  # last poll error, None when the last poll worked
    failing_since: float | None = None
    status: dict = field(default_factory=dict)
    snapshots: dict = field(default_factory=dict)  # watched pair -> dict of arrays
    bars: dict = field(default_factory=dict)  # (symbol, tf) -> BAR_DTYPE
    universe: dict = field(default_factory=dict)  # symbol -> BAR_DTYPE (analytics tf)
    alerts: tuple = ()  # every fired alert seen, oldest first
    rules: tuple = ()  # current alert rules (dicts)
    pairs: tuple = ()  # the pairs the engine steps live (Hub.pairs, sorted)
    screen: SavedScreen | None = None  # the store's newest saved screen


@dataclass(frozen=True)
class SavedScreen:
    """The newest screen saved under ``<store>/screens/`` (``pairstack screen``): its
    ``engine.screen`` table, parameters and file name."""

    table: Any  # pyarrow.Table
    params: dict
    name: str


@dataclass(eq=False)
class Job:
    """A request a session handed the bridge. ``state``: "queued", "running", "done" (then
    ``result``) or "failed" (then ``error``, the engine's message); ``progress`` (done, total)
    while a screen runs. Written by the bridge's thread, read by the session: never waited on."""

    what: str
    state: str = "queued"
    result: Any = None
    error: str | None = None
    progress: tuple[int, int] | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


@dataclass
class _Started:
    """A job on Ray: the ObjectRef of its outcome, a call that asks for its progress (an
    ObjectRef) and one that releases what it started."""

    ref: Any
    progress: Callable[[], Any] | None = None
    release: Callable[[], None] | None = None
    progress_ref: Any = None


@dataclass(frozen=True)
class Health:
    """What the status banner says: ``state`` is "live", "feed-down", "feed-unhealthy" (connected
    but no trade accepted: ids gone backwards, or every frame rejected), "stale" or
    "unreachable"."""

    state: str
    message: str

    @property
    def live(self) -> bool:
        return self.state == "live"


def health(cache: Cache, now: float, tf_ms: int) -> Health:
    """Live only when the engine answers, every feed is connected and healthy and bars are
    recent."""
    if cache.polled_at == 0.0:
        return Health("unreachable", "Connecting to the engine… (numbers appear once it answers)")
    if cache.failing_since is not None and now - cache.failing_since >= UNREACHABLE_S:
        since = time.strftime("%H:%M:%S", time.gmtime(cache.failing_since))
        return Health(
            "unreachable",
            f"Engine unreachable since {since} UTC ({cache.error}); retrying. "
            "The numbers shown are from before and are NOT live.",
        )
    feeds = cache.status.get("feeds", [])
    down = [f for f in feeds if not f.get("connected")]
    if down or not feeds:
        symbols = sorted({s for f in down for s in f.get("symbols", [])})
        reconnects = sum(int(f.get("reconnects", 0)) for f in feeds)
        return Health(
            "feed-down",
            f"Feed down: {len(down)} of {len(feeds)} connection(s) disconnected "
            f"({', '.join(symbols[:8])}{'…' if len(symbols) > 8 else ''}); reconnecting "
            f"({reconnects} reconnects so far{_retrying(down)}). The numbers shown are NOT live.",
        )
    unhealthy = _unhealthy(feeds)
    if unhealthy:
        return Health("feed-unhealthy", unhealthy)
    last = [_iso_to_ms(p.get("last_bar")) for p in cache.status.get("pairs", [])]
    last = [t for t in last if t is not None]
    if last and now * 1000.0 - (max(last) + tf_ms) > STALE_S * 1000.0:
        return Health(
            "stale",
            f"Feeds are connected but no bar has closed for over {STALE_S:.0f} s; "
            "the numbers shown are NOT live.",
        )
    return Health("live", "Live: all feeds connected")


def _unhealthy(feeds: list[dict]) -> str:
    """The banner of connected feed rows that are not healthy ("" when all are): the symbols
    whose ids went backwards with both ids, else the feeds whose frames are all rejected."""
    behind = [(s, b) for f in feeds for s, b in sorted(f.get("ids_behind", {}).items())]
    if behind:
        said = "; ".join(
            f"ids went backwards on {s}: the stream is at id {b['stream']}, the store holds up "
            f"to {b['store']}" for s, b in behind[:4]
        ) + ("; …" if len(behind) > 4 else "")  # fmt: skip
        return (
            f"Feed not healthy: {said}: the store was written from another source? Every trade "
            "of these symbols is rejected as a duplicate and nothing of them is stored. "
            "The numbers shown are NOT live."
        )
    bad = [f for f in feeds if not f.get("healthy", True)]
    if not bad:
        return ""
    rejected: dict[str, int] = {}
    for f in bad:
        for reason, n in f.get("rejected", {}).items():
            rejected[reason] = rejected.get(reason, 0) + int(n)
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items()) if v)
    return (
        f"Feed not healthy: {len(bad)} of {len(feeds)} connection(s) connected, but no trade "
        f"has been accepted for a while: every frame is rejected ({counts or 'none counted'}). "
        "The numbers shown are NOT live."
    )


def _retrying(down: list[dict]) -> str:
    """The banner's "; retrying: N failed connection attempts, last error: ..." of the
    disconnected feed rows, "" when none has failed to connect (the error cut to
    ``ERROR_CHARS``, HTML-escaped)."""
    failures = sum(int(f.get("connect_failures", 0)) for f in down)
    if not failures:
        return ""
    error = next((str(f["last_error"]) for f in down if f.get("last_error")), "unknown")
    if len(error) > ERROR_CHARS:
        error = error[: ERROR_CHARS - 1] + "…"
    return (
        f"; retrying: {failures} failed connection attempts, "
        f"last error: {html.escape(error, quote=False)}"
    )


def _last_ts(cols: dict | None) -> int | None:
    """The ts (ms) of the last cached step of a snapshot, None when there is none."""
    if cols is None or not len(cols["ts"]):
        return None
    return int(cols["ts"][-1])


def _merge_snapshot(old: dict | None, fresh: dict) -> dict:
    """The cached snapshot with the steps ``Hub.snapshots_since`` returned appended, at most
    the PairActor's ``RECENT_BARS`` kept (a ``full`` answer replaces it)."""
    if old is None or fresh["full"]:
        return fresh["cols"]
    if not len(fresh["cols"]["ts"]):
        return old
    return {k: np.concatenate([old[k], v])[-RECENT_BARS:] for k, v in fresh["cols"].items()}


def _bars_to_ask(old: np.ndarray | None, timeframe: str) -> int:
    """How many recent bars to ask for: all ``WANTED_BARS`` without cached ones, else those
    elapsed since the last cached bar plus ``BARS_MARGIN``."""
    if old is None or not old.size:
        return WANTED_BARS
    elapsed = (time.time() * 1000.0 - float(old["ts"][-1])) / timeframe_ms(timeframe)
    return int(min(WANTED_BARS, max(0.0, np.ceil(elapsed)) + BARS_MARGIN))


def _merge_bars(old: np.ndarray | None, got: np.ndarray, asked: int) -> np.ndarray | None:
    """The cached bars with the newly fetched ones merged in (a fetched bar replaces a cached
    one of the same ts). A full fetch (``WANTED_BARS`` asked) replaces the cache. When the
    fetched bars do not reach back to the cached ones (more closed since than asked for), the
    cached bars are dropped (None) so that the next poll fetches them all again."""
    if old is None or asked >= WANTED_BARS or not old.size:
        return got
    if got.size < asked:  # the feed holds no more than these
        return got
    if got["ts"][0] > old["ts"][-1]:
        return None
    return np.concatenate([old[old["ts"] < got["ts"][0]], got])[-WANTED_BARS:]


def _iso_to_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(np.datetime64(iso.rstrip("Z"), "ms").astype(np.int64))


class Bridge:
    """Polls a Hub actor handle into :attr:`cache` from a daemon thread."""

    def __init__(
        self,
        hub: object,
        *,
        pairs: list[str],
        symbols: list[str],
        timeframe: str,
        store: str | os.PathLike | None = None,
        interval_s: float = 0.5,
        universe_every_s: float = 5.0,
        call_timeout_s: float = 5.0,
    ):
        self.hub = hub
        self.pairs = list(pairs)
        self.store = store
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self.interval_s = interval_s
        self.universe_every_s = universe_every_s
        self.call_timeout_s = call_timeout_s
        self.cache = Cache()
        self._wanted: dict[tuple[str, str], float] = {}
        self._watched: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._universe_at = 0.0
        self._alerts_since: int | None = None
        self._screens_seen: int | None = None  # mtime (ns) of the screens folder last read
        self._queued: list[tuple[Job, Callable[[], _Started]]] = []
        self._running: list[tuple[Job, _Started]] = []
        self._backtest_task: Any = None  # ray.remote(backtest_bars), made on first use
        self.polls = 0

    def want(self, symbol: str, timeframe: str) -> None:
        """Ask for the recent bars of ``symbol``/``timeframe`` in the next polls."""
        with self._lock:
            new = (symbol, timeframe) not in self._wanted
            self._wanted[(symbol, timeframe)] = time.monotonic()
        if new:
            self._wake.set()

    def watch(self, pair: str) -> None:
        """Keep the snapshot of ``pair`` (a live pair of the engine) in the cache for the next
        ``WANT_TTL_S`` seconds; other names are ignored."""
        if pair not in self.pairs:
            return
        with self._lock:
            new = pair not in self._watched
            self._watched[pair] = time.monotonic()
        if new:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pairstack-bridge", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        for _, started in self._running:  # screens still running: their actors go
            if started.release is not None:
                started.release()
        self._running = []

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._wake.clear()
            self.run_jobs()
            self.poll()
            self._wake.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def poll(self) -> None:
        """One poll; failures are recorded in the cache, never raised."""
        import ray

        now = time.monotonic()
        with self._lock:
            self._wanted = {k: t for k, t in self._wanted.items() if now - t < WANT_TTL_S}
            self._watched = {p: t for p, t in self._watched.items() if now - t < WANT_TTL_S}
            wanted = list(self._wanted)
            watched = list(self._watched)
        universe = now - self._universe_at >= self.universe_every_s
        old = self.cache
        since = {p: _last_ts(old.snapshots.get(p)) for p in watched}
        counts = [_bars_to_ask(old.bars.get(k), k[1]) for k in wanted]
        try:
            refs = [self.hub.status.remote(), self.hub.alerts.remote(self._alerts_since)]
            refs.append(self.hub.rules.remote())
            refs.append(self.hub.pairs.remote())
            refs.append(self.hub.snapshots_since.remote(since))
            refs += [
                self.hub.recent_bars.remote(s, tf, n)
                for (s, tf), n in zip(wanted, counts, strict=True)
            ]
            if universe:
                refs += [
                    self.hub.recent_bars.remote(s, self.timeframe, UNIVERSE_BARS)
                    for s in self.symbols
                ]
            out = ray.get(refs, timeout=self.call_timeout_s)
        except (ray.exceptions.RayError, ValueError, KeyError) as exc:
            first = old.failing_since if old.failing_since is not None else time.time()
            self.cache = replace(
                old,
                seq=old.seq + 1,
                error=f"{type(exc).__name__}: {exc}"[:200],
                failing_since=first,
            )
            log.warning("bridge poll failed: %s", exc)
            return
        status, fired, rules, pairs, fresh = out[:5]
        self.pairs = list(pairs)
        snapshots = {p: _merge_snapshot(old.snapshots.get(p), fresh[p]) for p in watched}
        k = 5
        bars = {
            key: _merge_bars(old.bars.get(key), got, n)
            for key, got, n in zip(wanted, out[k : k + len(wanted)], counts, strict=True)
        }
        bars = {key: b for key, b in bars.items() if b is not None}
        k += len(wanted)
        uni, saved = old.universe, old.screen
        if universe:
            uni = dict(zip(self.symbols, out[k:], strict=True))
            self._universe_at = now
            saved = self._saved_screen(saved)
        if fired:
            self._alerts_since = max(int(e["fired_at"]) for e in fired)
        self.polls += 1
        self.cache = Cache(
            seq=old.seq + 1,
            polled_at=time.time(),
            error=None,
            failing_since=None,
            status=status,
            snapshots=snapshots,
            bars=bars,
            universe=uni,
            alerts=old.alerts + tuple(fired),
            rules=tuple(r.to_dict() if hasattr(r, "to_dict") else dict(r) for r in rules),
            pairs=tuple(pairs),
            screen=saved,
        )

    def _saved_screen(self, cached: SavedScreen | None) -> SavedScreen | None:
        """The store's newest saved screen, read again only when its folder changed."""
        folder = Path(self.store) / SCREENS_DIR if self.store is not None else None
        if folder is None or not folder.is_dir():
            return cached
        stamp = folder.stat().st_mtime_ns
        if stamp == self._screens_seen:
            return cached
        try:
            got = latest_screen(self.store)
        except (OSError, ValueError) as exc:  # a file being replaced, or not a screen
            log.warning("bridge: saved screen not read: %s", exc)
            return cached
        self._screens_seen = stamp
        if got is None:
            return None
        table, params = got
        name = max(p.name for p in folder.glob("[0-9]*.parquet"))
        return SavedScreen(table, params, name)

    # -- jobs: what sessions ask of the engine, run from this thread -------------------------
    def _submit(self, what: str, start: Callable[[], _Started]) -> Job:
        job = Job(what)
        with self._lock:
            self._queued.append((job, start))
        self._wake.set()
        return job

    def run_jobs(self) -> None:
        """Start the queued jobs; record the outcome of those whose ObjectRef is ready and the
        progress of the others (never blocks on a job)."""
        import ray

        with self._lock:
            queued, self._queued = self._queued, []
        for job, start in queued:
            try:
                started = start()
            except (ray.exceptions.RayError, TypeError, ValueError) as exc:  # the job fails
                job.error, job.state = f"{type(exc).__name__}: {exc}", "failed"
                continue
            job.state = "running"
            self._running.append((job, started))
        if not self._running:
            return
        refs = [s.ref for _, s in self._running]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready = set(ready)
        still = []
        for job, started in self._running:
            if started.ref in ready:
                self._finish(job, started)
            else:
                self._progress(job, started)
                still.append((job, started))
        self._running = still

    def _finish(self, job: Job, started: _Started) -> None:
        import ray

        try:
            job.result = ray.get(started.ref)
            job.state = "done"
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            job.error = str(cause) if cause is not None else f"{type(exc).__name__}: {exc}"
            job.state = "failed"
        finally:
            if started.release is not None:
                started.release()

    def _progress(self, job: Job, started: _Started) -> None:
        import ray

        if started.progress is None:
            return
        ref = started.progress_ref
        if ref is not None:
            if not ray.wait([ref], timeout=0)[0]:
                return
            try:
                job.progress = tuple(ray.get(ref))
            except ray.exceptions.RayError:
                return
        started.progress_ref = started.progress()

    def add_rule(self, rule: dict) -> Job:
        """Add an alert rule (``Hub.add_rule``)."""
        return self._submit("add rule", lambda: _Started(self.hub.add_rule.remote(rule)))

    def remove_rule(self, key: str) -> Job:
        """Remove the alert rule ``key`` (``Hub.remove_rule``)."""
        return self._submit("remove rule", lambda: _Started(self.hub.remove_rule.remote(key)))

    def add_pairs(self, pairs: list[str]) -> Job:
        """Step ``pairs`` live from now on (``Hub.add_pairs``; result: the pairs added)."""
        return self._submit("add pairs", lambda: _Started(self.hub.add_pairs.remote(pairs)))

    def backtest(self, *args: Any, **kwargs: Any) -> Job:
        """``actors.backtest.backtest_bars(*args, **kwargs)`` as a Ray task (result: the
        ``BacktestResult``)."""

        def start() -> _Started:
            if self._backtest_task is None:
                import ray

                from actors.backtest import backtest_bars

                self._backtest_task = ray.remote(backtest_bars)
            return _Started(self._backtest_task.remote(*args, **kwargs))

        return self._submit("backtest", start)

    def screen(self, *args: Any, **kwargs: Any) -> Job:
        """``actors.screen.screen_recent(*args, **kwargs)`` in a ``ScreenJob`` actor of its own
        (result: the ``ScreenOutcome``; progress in chunks of pairs)."""

        def start() -> _Started:
            import ray

            from actors.screen import ScreenJob

            actor = ray.remote(ScreenJob).options(max_concurrency=2).remote()
            return _Started(
                actor.run.remote(*args, **kwargs),
                progress=actor.progress.remote,
                release=lambda: ray.kill(actor),
            )

        return self._submit("screen", start)
