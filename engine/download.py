"""``pairstack download``: Binance history into the store (plan, fetch, verify, import, record).

- Plan (``plan``): symbols x data (klines of each timeframe, funding, trades) x a UTC date range
  become archive files (``engine.binance.archive_path``): a calendar month inside the range and
  over before today comes from the monthly archive, the other days from the daily one (a monthly
  file not published yet, HTTP 404, falls back to its days). Funding rates come from monthly
  files; the month not over yet (and a monthly file not published yet) from REST
  ``/fapi/v1/fundingRate``. When the range reaches today, today's klines come from REST
  ``/fapi/v1/klines`` (1,500 a request; the bar still open is never stored); today's trades are
  not fetched (their daily file appears tomorrow).
- Fetch (``Downloader``): ``jobs`` files at once (asyncio + httpx), each streamed into a
  temporary file under ``<store>/downloads/tmp`` with its SHA-256 computed on the way, then its
  ``.CHECKSUM``: a mismatch refuses that file (named in the report) and the run goes on. HTTP
  404 means not published (before the symbol's listing, or not yet): reported and skipped, and
  when the file's period ended over ``ABSENT_AFTER_MS`` ago recorded as absent, so later runs
  do not ask again. HTTP 429/418: wait ``Retry-After`` seconds and retry
  (``engine.binance.RestClient`` does the same for REST).
- Import: one file at a time through ``engine.importer.import_files`` (the store has one
  writer), in a worker thread so that downloads go on meanwhile.
- Record: ``<store>/downloads/manifest.json`` (written atomically after each import) lists every
  imported archive file with its SHA-256 and rows; a later run fetches none of them again. A
  run killed at any point leaves at most a temporary file (removed by the next run) and a file
  imported but not yet recorded (fetched and imported again, which changes nothing), so the
  resumed run ends with the same store as an uninterrupted one. REST parts (today, the current
  month's funding) are fetched again by every run: they grow.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from engine.atomic import write_atomic
from engine.binance import (
    BINANCE_PUBLIC_DATA,
    BINANCE_REST,
    FUNDING_RATE_MAX_LIMIT,
    KLINE_INTERVALS,
    KLINES_MAX_LIMIT,
    RestClient,
    archive_path,
    check_symbol,
    kline_bars,
    retry_after_s,
)
from engine.errors import DataError, FeedError, UploadError
from engine.importer import funding_rows, import_files
from engine.schemas import TIMEFRAME_MS
from engine.store import Store

log = logging.getLogger(__name__)

#: What can be downloaded: klines (bars of their interval), funding rates, aggregate trades.
DATA_KINDS: tuple[str, ...] = ("klines", "funding", "trades")
#: The manifest of imported archive files, under the store's root.
MANIFEST = Path("downloads") / "manifest.json"
DAY_MS = 86_400_000
#: A file still missing this long after its period ended is recorded as absent (before the
#: symbol's listing): later runs do not ask for it again.
ABSENT_AFTER_MS = 7 * DAY_MS


def _day_ms(day: dt.date) -> int:
    return calendar.timegm(day.timetuple()) * 1000


def _month_end(day: dt.date) -> dt.date:
    """The last day of ``day``'s month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


@dataclass(frozen=True)
class ArchiveFile:
    """One zip of the public-data archive."""

    symbol: str
    data: str  # "klines", "funding" or "trades"
    kind: str  # kline interval, "fundingRate" or "aggTrades"
    period: str  # "daily" or "monthly"
    date: str  # YYYY-MM-DD (daily) or YYYY-MM (monthly)

    @property
    def path(self) -> str:
        """Path under the archive host; ``+ ".CHECKSUM"`` for its checksum."""
        return archive_path(self.period, self.kind, self.symbol, self.date)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]

    @property
    def end_ms(self) -> int:
        """End (exclusive, ms) of the period the file covers."""
        if self.period == "daily":
            return _day_ms(dt.date.fromisoformat(self.date)) + DAY_MS
        return _day_ms(_month_end(dt.date.fromisoformat(self.date + "-01"))) + DAY_MS

    def days(self, first: dt.date, last: dt.date) -> list[ArchiveFile]:
        """The daily files of a monthly one, within [first, last]."""
        month = dt.date.fromisoformat(self.date + "-01")
        day, end = max(month, first), min(_month_end(month), last)
        out = []
        while day <= end:
            out.append(replace(self, period="daily", date=day.isoformat()))
            day += dt.timedelta(days=1)
        return out


@dataclass(frozen=True)
class RestPart:
    """Rows fetched from REST: ``start_ms <= time < end_ms``."""

    symbol: str
    data: str  # "klines" or "funding"
    kind: str  # kline interval or "fundingRate"
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Plan:
    """What a download fetches; ``first``/``last``: the range's days (UTC, inclusive)."""

    files: tuple[ArchiveFile, ...]
    rest: tuple[RestPart, ...]
    first: dt.date
    last: dt.date


def plan(symbols: Sequence[str], data: Sequence[str], timeframes: Sequence[str],
         first: dt.date, last: dt.date, now_ms: int) -> Plan:  # fmt: skip
    """Archive files and REST parts for ``symbols`` x ``data`` over the days [first, last]
    (UTC) as of wall time ``now_ms`` (see the module docstring)."""
    for d in data:
        if d not in DATA_KINDS:
            raise DataError(f"data kind {d!r}: expected some of {', '.join(DATA_KINDS)}")
    for tf in timeframes:
        if tf not in KLINE_INTERVALS:
            raise DataError(
                f"kline timeframe {tf!r}: expected some of {', '.join(KLINE_INTERVALS)}")
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date()
    if first > last:
        raise DataError(f"start {first} is after end {last}")
    if first > today:
        raise DataError(f"start {first} is in the future (today is {today} UTC)")
    last = min(last, today)
    archived = min(last, today - dt.timedelta(days=1))  # the last day with a daily file
    end_ms = min(_day_ms(last) + DAY_MS, now_ms)
    files: list[ArchiveFile] = []
    rest: list[RestPart] = []
    for sym in (check_symbol(s) for s in symbols):
        for d in data:
            if d == "funding":
                month = first.replace(day=1)
                while month <= last:
                    nxt = _month_end(month) + dt.timedelta(days=1)
                    if nxt <= today:
                        files.append(ArchiveFile(sym, d, "fundingRate", "monthly",
                                                 month.strftime("%Y-%m")))
                    else:
                        start_ms = max(_day_ms(month), _day_ms(first))
                        rest.append(RestPart(sym, d, "fundingRate", start_ms, end_ms))
                    month = nxt
                continue
            for kind in timeframes if d == "klines" else ("aggTrades",):
                day = first
                while day <= archived:
                    month_last = _month_end(day)
                    if day.day == 1 and month_last <= archived:
                        files.append(ArchiveFile(sym, d, kind, "monthly", day.strftime("%Y-%m")))
                        day = month_last + dt.timedelta(days=1)
                    else:
                        files.append(ArchiveFile(sym, d, kind, "daily", day.isoformat()))
                        day += dt.timedelta(days=1)
                if d == "klines" and last >= today:
                    rest.append(RestPart(sym, d, kind, max(_day_ms(today), _day_ms(first)), end_ms))
    return Plan(tuple(files), tuple(rest), first, last)


# ----------------------------------------------------------------------------- manifest


class Manifest:
    """Imported archive files (path -> SHA-256 and rows) of a store, and files known to be
    absent (HTTP 404 for a period over ``ABSENT_AFTER_MS`` ago), in ``MANIFEST``."""

    def __init__(self, root: Path) -> None:
        self.path = root / MANIFEST
        self.files: dict[str, dict] = {}
        self.absent: set[str] = set()
        if self.path.exists():
            try:
                doc = json.loads(self.path.read_text())
                self.files = dict(doc["files"])
                self.absent = set(doc.get("absent", ()))
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{self.path}: not a download manifest ({exc}); delete it to fetch every "
                    "file again (importing a file twice changes nothing)") from None

    def __contains__(self, path: str) -> bool:
        return path in self.files

    def record(self, path: str, sha256: str, rows: int) -> None:
        """Add an imported file and write the manifest atomically."""
        self.files[path] = {"sha256": sha256, "rows": rows}
        self._save()

    def record_absent(self, path: str) -> None:
        """Add a file the archive will not publish (its period is long over)."""
        self.absent.add(path)
        self._save()

    def _save(self) -> None:
        doc = {"files": self.files, "absent": sorted(self.absent)}
        write_atomic(self.path, json.dumps(doc, indent=0, sort_keys=True))


# ----------------------------------------------------------------------------- report


@dataclass
class Tally:
    """One (symbol, data) line of the closing table."""

    fetched: int = 0  # archive files downloaded and imported by this run
    stored: int = 0  # archive files imported by an earlier run (not fetched)
    skipped: int = 0  # archive files not published (HTTP 404)
    failed: int = 0  # refused: checksum mismatch, malformed, HTTP error
    rows: int = 0  # rows imported (archive CSV rows and REST rows)


@dataclass
class DownloadReport:
    """What a download did: a tally per (symbol, data), the files skipped and refused."""

    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # "<name>: why"
    failed: list[str] = field(default_factory=list)  # "<name>: why"

    def tally(self, symbol: str, data: str) -> Tally:
        return self.tallies.setdefault((symbol, data), Tally())

    @property
    def fetched(self) -> int:
        return sum(t.fetched for t in self.tallies.values())

    def table(self) -> str:
        """The closing table: symbol, data, files fetched, already stored, skipped, failed,
        rows; then the files skipped and refused."""
        head = ("symbol", "data", "fetched", "stored", "skipped", "failed", "rows")
        rows = [(s, d, str(t.fetched), str(t.stored), str(t.skipped), str(t.failed), str(t.rows))
                for (s, d), t in sorted(self.tallies.items())]  # fmt: skip
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [head, *rows]]  # fmt: skip
        lines += [f"skipped {line}" for line in self.skipped]
        lines += [f"refused {line}" for line in self.failed]
        return "\n".join(lines)


class _Refused(Exception):
    """A file the run leaves out (checksum mismatch, HTTP error); the message names it."""


# ----------------------------------------------------------------------------- fetching


class Downloader:
    """Runs a ``Plan`` into a store (see the module docstring)."""

    def __init__(self, store: Store, *, base_url: str = BINANCE_PUBLIC_DATA,
                 rest_url: str = BINANCE_REST, jobs: int = 4, progress: bool | None = None,
                 max_retries: int = 8, timeout_s: float = 60.0) -> None:  # fmt: skip
        """``progress``: a bar on stderr (None: only when stderr is a terminal)."""
        if jobs < 1:
            raise DataError(f"jobs must be >= 1, got {jobs}")
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.jobs = jobs
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.tmp = store.path / "downloads" / "tmp"

    def top_symbols(self, n: int) -> list[str]:
        """The ``n`` USDT perpetuals with status TRADING and the highest 24 h quote volume."""
        return asyncio.run(self._top(n))

    async def _top(self, n: int) -> list[str]:
        async with RestClient(self.rest_url, max_retries=self.max_retries) as rest:
            info = await rest.exchange_info()
            tickers = await rest.ticker_24hr_all()
        eligible = {s["symbol"] for s in info["symbols"]
                    if s.get("status") == "TRADING" and s.get("contractType") == "PERPETUAL"
                    and s.get("quoteAsset", "USDT") == "USDT" and s["symbol"].endswith("USDT")}
        ranked = sorted((-float(t["quoteVolume"]), t["symbol"]) for t in tickers
                        if t["symbol"] in eligible)  # fmt: skip
        return [sym for _, sym in ranked[:n]]

    def run(self, todo: Plan) -> DownloadReport:
        """Fetch and import everything ``todo`` lists that the store lacks."""
        return asyncio.run(self._run(todo))

    async def _run(self, todo: Plan) -> DownloadReport:
        report = DownloadReport()
        manifest = Manifest(self.store.path)
        shutil.rmtree(self.tmp, ignore_errors=True)  # left by an interrupted run
        self.tmp.mkdir(parents=True, exist_ok=True)
        for f in todo.files:
            report.tally(f.symbol, f.data)
        for part in todo.rest:
            report.tally(part.symbol, part.data)
        lock = asyncio.Lock()
        sem = asyncio.Semaphore(self.jobs)
        fallback: list[RestPart] = []
        tasks: list[asyncio.Task] = []
        queued = [0, 0]  # files to fetch, files done
        with tqdm(total=0, unit="B", unit_scale=True, desc="download", file=sys.stderr,
                  disable=not self.progress) as bar:  # fmt: skip
            limits = httpx.Limits(max_connections=self.jobs)
            async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s,
                                         limits=limits) as http:  # fmt: skip

                def route(items: Iterable[ArchiveFile | RestPart]) -> None:
                    """Fetch what the manifest does not know; follow its known absences."""
                    for f in items:
                        if isinstance(f, RestPart):
                            fallback.append(f)
                        elif f.path in manifest:
                            report.tally(f.symbol, f.data).stored += 1
                        elif f.path in manifest.absent:
                            route(self._not_published(f, report, todo))
                        else:
                            queued[0] += 1
                            tasks.append(asyncio.create_task(one(f)))

                async def one(f: ArchiveFile) -> None:
                    more = await self._file(http, f, sem, lock, manifest, report, bar, todo)
                    queued[1] += 1
                    bar.set_postfix(files=f"{queued[1]}/{queued[0]}")
                    route(more)

                route(todo.files)
                while tasks:
                    batch, tasks[:] = list(tasks), []
                    await asyncio.gather(*batch)
            async with RestClient(self.rest_url, max_retries=self.max_retries,
                                  timeout_s=self.timeout_s) as rest:  # fmt: skip
                for part in [*todo.rest, *fallback]:
                    rows = await self._rest_part(rest, part, lock)
                    report.tally(part.symbol, part.data).rows += rows
        shutil.rmtree(self.tmp, ignore_errors=True)
        return report

    async def _file(self, http: httpx.AsyncClient, f: ArchiveFile, sem: asyncio.Semaphore,
                    lock: asyncio.Lock, manifest: Manifest, report: DownloadReport, bar: tqdm,
                    todo: Plan) -> list[ArchiveFile | RestPart]:  # fmt: skip
        """Fetch, verify, import and record one file; what to fetch instead when it is a
        monthly file not published yet."""
        tally = report.tally(f.symbol, f.data)
        tmp = self.tmp / f.name
        try:
            async with sem:
                digest = hashlib.sha256()

                def take(chunk: bytes) -> None:
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))

                with tmp.open("wb") as out:
                    status = await self._get(http, f.path, take, bar)
                if status == 404:
                    if f.end_ms < time.time_ns() // 10**6 - ABSENT_AFTER_MS:
                        async with lock:
                            await asyncio.to_thread(manifest.record_absent, f.path)
                    return self._not_published(f, report, todo)
                text = bytearray()
                if await self._get(http, f.path + ".CHECKSUM", text.extend, None) == 404:
                    raise _Refused(f"{f.name}: no .CHECKSUM published beside it; not imported")
            actual = digest.hexdigest()
            parts = text.decode("utf-8", "replace").split()
            if len(parts) != 2 or parts[1].lstrip("*") != f.name:
                raise _Refused(f"{f.name}: .CHECKSUM reads {text[:120]!r}, expected "
                               f"'<sha256>  {f.name}'; not imported")
            if parts[0].lower() != actual:
                raise _Refused(f"{f.name}: checksum mismatch: .CHECKSUM says {parts[0].lower()}, "
                               f"the file's SHA-256 is {actual}; not imported")
            async with lock:
                imported = await asyncio.to_thread(self._import, tmp, f, actual, manifest)
            tally.fetched += 1
            tally.rows += imported
        except _Refused as exc:
            tally.failed += 1
            report.failed.append(str(exc))
            log.warning("%s", exc)
        finally:
            tmp.unlink(missing_ok=True)
        return []

    def _import(self, tmp: Path, f: ArchiveFile, sha256: str, manifest: Manifest) -> int:
        try:
            rows = import_files([tmp], self.store).rows
        except UploadError as exc:
            raise _Refused(f"{f.name}: {exc}; not imported") from None
        manifest.record(f.path, sha256, rows)
        return rows

    @staticmethod
    def _not_published(f: ArchiveFile, report: DownloadReport,
                       todo: Plan) -> list[ArchiveFile | RestPart]:  # fmt: skip
        """A 404: a monthly file falls back to its days (klines, trades) or REST (funding)."""
        if f.period == "monthly" and f.data == "funding":
            month = dt.date.fromisoformat(f.date + "-01")
            start = max(month, todo.first)
            end = min(_month_end(month), todo.last) + dt.timedelta(days=1)
            return [RestPart(f.symbol, f.data, f.kind, _day_ms(start), _day_ms(end))]
        if f.period == "monthly":
            return list(f.days(todo.first, todo.last))
        report.tally(f.symbol, f.data).skipped += 1
        report.skipped.append(f"{f.name}: not published (HTTP 404: before the listing or not "
                              "yet)")  # fmt: skip
        return []

    async def _get(self, http: httpx.AsyncClient, path: str, take: Callable[[bytes], object],
                   bar: tqdm | None) -> int:  # fmt: skip
        """GET ``path`` into ``take`` (chunks of a 200 answer); its status (200 or 404).

        429/418: waits ``Retry-After`` and retries; network errors and 5xx: retried with a
        growing pause; after ``max_retries`` retries, or on another status, _Refused."""
        name = path.rsplit("/", 1)[1]
        for attempt in range(self.max_retries + 1):
            try:
                async with http.stream("GET", path) as resp:
                    status = resp.status_code
                    if status == 200:
                        size = resp.headers.get("Content-Length")
                        if bar is not None and size is not None and size.isdigit():
                            bar.total += int(size)
                            bar.refresh()
                        async for chunk in resp.aiter_bytes(1 << 20):
                            take(chunk)
                        return 200
                    if status == 404:
                        return 404
                    if status in (418, 429):
                        delay = retry_after_s(resp, 1.0)
                    elif status >= 500:
                        delay = min(30.0, 0.5 * 2**attempt)
                    else:
                        raise _Refused(f"{name}: HTTP {status}; not imported")
            except httpx.HTTPError as exc:
                if attempt == self.max_retries:
                    raise _Refused(f"{name}: {exc!r}; not imported") from None
                delay = min(30.0, 0.5 * 2**attempt)
                status = None
            log.warning("GET %s: %s, retrying in %.1f s", path, status or "network error", delay)
            await asyncio.sleep(delay)
        raise _Refused(f"{name}: still HTTP {status} after {self.max_retries} retries; "
                       "not imported")

    async def _rest_part(self, rest: RestClient, part: RestPart, lock: asyncio.Lock) -> int:
        """Fetch one REST part and store it; rows stored."""
        fetch = self._rest_klines if part.data == "klines" else self._rest_funding
        return await fetch(rest, part, lambda write: self._write_locked(write, lock))

    async def _write_locked(self, write: Callable[[], None], lock: asyncio.Lock) -> None:
        """Run ``write`` (store writes) and flush, in the writer thread's turn."""

        def write_and_flush() -> None:
            write()
            self.store.flush()

        async with lock:
            await asyncio.to_thread(write_and_flush)

    async def _rest_klines(self, rest: RestClient, part: RestPart,
                           write: Callable[[Callable[[], None]], Awaitable[None]]) -> int:
        tf = TIMEFRAME_MS[part.kind]
        cursor, rows = part.start_ms, 0
        while cursor < part.end_ms:
            page = await rest.klines(part.symbol, part.kind, cursor, part.end_ms - 1,
                                     KLINES_MAX_LIMIT)  # fmt: skip
            if not page:
                break
            bars = kline_bars(page, part.kind, min(part.end_ms, time.time_ns() // 10**6))
            if bars.size:
                await write(lambda b=bars: self.store.write_bars(part.kind, part.symbol, b))
                rows += bars.size
            cursor = int(page[-1][0]) + tf
            if len(page) < KLINES_MAX_LIMIT:
                break
        return rows

    async def _rest_funding(self, rest: RestClient, part: RestPart,
                            write: Callable[[Callable[[], None]], Awaitable[None]]) -> int:
        cursor, rows = part.start_ms, 0
        while cursor < part.end_ms:
            page = await rest.funding_rates(part.symbol, cursor, part.end_ms - 1,
                                            FUNDING_RATE_MAX_LIMIT)  # fmt: skip
            if not page:
                break
            try:
                times = np.array([int(r["fundingTime"]) for r in page], dtype=np.int64)
                rates = np.array([float(r["fundingRate"]) for r in page])
                marks = np.array([float(r.get("markPrice") or "nan") for r in page])
            except (ValueError, TypeError, KeyError) as exc:
                raise FeedError(f"/fapi/v1/fundingRate: unexpected row ({exc!r})") from None
            table = funding_rows(times, rates, marks)
            await write(lambda t=table: self.store.write_funding(part.symbol, t))
            rows += len(page)
            cursor = int(times[-1]) + 1
            if len(page) < FUNDING_RATE_MAX_LIMIT:
                break
        return rows


def date_range(days: int | None, start: dt.date | None, end: dt.date | None,
               now_ms: int) -> tuple[dt.date, dt.date]:  # fmt: skip
    """[first, last] UTC days: ``days`` N: from N days before today to today; else ``start``
    to ``end`` (default today)."""
    today = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date()
    if start is None:
        return today - dt.timedelta(days=days if days is not None else 30), today
    return start, end if end is not None else today


def download(store: Store, symbols: Iterable[str] | None, top: int | None, first: dt.date,
             last: dt.date, *, data: Sequence[str] = ("klines", "funding"),
             timeframes: Sequence[str] = ("1m", "5m"), base_url: str = BINANCE_PUBLIC_DATA,
             rest_url: str = BINANCE_REST, jobs: int = 4, progress: bool | None = None,
             now_ms: int | None = None) -> DownloadReport:  # fmt: skip
    """Download ``symbols`` (or the ``top`` N by 24 h quote volume) over [first, last] into
    ``store``; the closing report."""
    loader = Downloader(store, base_url=base_url, rest_url=rest_url, jobs=jobs,
                        progress=progress)  # fmt: skip
    chosen = list(symbols) if symbols is not None else loader.top_symbols(top or 0)
    if not chosen:
        raise DataError("no symbols to download: give symbols, or a --top N that finds some")
    now_ms = time.time_ns() // 10**6 if now_ms is None else now_ms
    return loader.run(plan(chosen, data, timeframes, first, last, now_ms))
