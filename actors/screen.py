"""A screen's pairs over Ray actors: ``ScreenWorker`` and the pool that feeds it chunks.

``engine.screen`` does the work (no Ray); this module only spreads its chunks
(``engine.screen.screen_chunk``) over processes. The ``ScreenData`` (tested series and their
co-moments, ~35 MB for 500 symbols x 8,640 bars) goes to Ray's object store once
(``ray.put``) and every worker is built on it; then each worker gets chunks of pair indices,
at most ``max_in_flight`` pending at a time, gathered with ``ray.wait`` as they finish, with a
progress bar over chunks (tqdm, only when stderr is a terminal).

In-process or Ray (``ScreenRunner``, the CLI's ``runner``): a screen of fewer than
``RAY_MIN_PAIRS`` pairs runs in the calling process (starting actors costs more than the work:
2,000 pairs of 8,640 bars take about a second on one core); a larger one, or any screen given
``actors >= 1``, runs on ``actors`` workers (default: the cluster's CPUs). ``actors=0`` forces
the calling process.

The dashboard's screen (``screen_recent``: the liquid symbols' bars in memory with the store's
before them) runs in a ``ScreenJob`` actor that the UI bridge starts, one per screen, and
whose ``progress()`` it reads while the screen runs.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.errors import ConfigError
from engine.schemas import timeframe_ms
from engine.screen import (
    ChunkRows,
    ScreenData,
    load_bars,
    run_in_process,
    screen_bars,
    screen_chunk,
)

#: below this many pairs (and without ``actors``) a screen runs in the calling process
RAY_MIN_PAIRS = 2_000


class ScreenWorker:
    """Body of a screen actor: owns one ``ScreenData``, screens chunks of pairs over it."""

    def __init__(self, data: ScreenData):
        # Ray hands numpy arrays over read-only from its object store; the kernels want their own
        self.data = ScreenData(
            *(np.array(a) for a in (data.series, data.cov, data.lag_cov, data.lead_lag))
        )

    def run(self, pairs: np.ndarray) -> ChunkRows:
        return screen_chunk(self.data, pairs)


def _progress(total: int, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="screen", disable=not sys.stderr.isatty())


def run_on_ray(
    data: ScreenData, chunks: Sequence[np.ndarray], n_actors: int, *, max_in_flight: int = 2
) -> list[ChunkRows]:
    """Every chunk on ``n_actors`` ScreenWorkers (Ray must be initialised); rows in chunk order.
    Chunks go to whichever worker has fewer than ``max_in_flight`` pending."""
    import ray

    if n_actors < 1:
        raise ConfigError(f"actors: expected a positive integer, got {n_actors}")
    data_ref = ray.put(data)
    run_id = uuid.uuid4().hex[:8]
    remote = ray.remote(num_cpus=1)(ScreenWorker)
    workers = [
        remote.options(name=f"pairstack-screen-{run_id}-{i}").remote(data_ref)
        for i in range(min(n_actors, max(len(chunks), 1)))
    ]
    results: list[ChunkRows | None] = [None] * len(chunks)
    pending: dict[Any, tuple[int, int]] = {}  # ref -> (worker, chunk)
    load = [0] * len(workers)
    queue = list(range(len(chunks)))
    try:
        with _progress(len(chunks), "chunk") as bar:
            while queue or pending:
                for w, worker in enumerate(workers):
                    while queue and load[w] < max_in_flight:
                        c = queue.pop(0)
                        pending[worker.run.remote(chunks[c])] = (w, c)
                        load[w] += 1
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5)
                if not done:
                    done, _ = ray.wait(list(pending), num_returns=1)
                for ref, rows in zip(done, ray.get(done), strict=True):
                    w, c = pending.pop(ref)
                    load[w] -= 1
                    results[c] = rows
                    bar.update(1)
    finally:
        for worker in workers:
            ray.kill(worker)
    return results  # type: ignore[return-value]


def _in_process_with_progress(
    data: ScreenData, chunks: Sequence[np.ndarray]
) -> Iterator[ChunkRows]:
    with _progress(len(chunks), "chunk") as bar:
        for rows in run_in_process(data, chunks):
            bar.update(1)
            yield rows


class ScreenRunner:
    """The ``runner`` of ``engine.screen.screen_bars`` for ``--actors`` (None: not given): in
    this process or on Ray (module doc). Ray is joined (``actors.ray_init.init_ray``) only when
    the screen needs it; ``close()`` shuts down a cluster this runner started."""

    def __init__(self, actors: int | None, address: str | None = None):
        if actors is not None and actors < 0:
            raise ConfigError(f"--actors {actors}: expected 0 (this process) or more workers")
        self.actors = actors
        self.address = address
        self.owns_ray = False
        self.workers = 0

    def uses_ray(self, n_pairs: int) -> bool:
        """Whether a screen of ``n_pairs`` runs on Ray."""
        return n_pairs >= RAY_MIN_PAIRS if self.actors is None else self.actors >= 1

    def __call__(self, n_pairs: int) -> tuple[int, Any]:
        if not self.uses_ray(n_pairs):
            self.workers = 0
            return 1, _in_process_with_progress
        import ray

        from actors.ray_init import init_ray

        self.owns_ray = init_ray(self.address, log_to_driver=False) or self.owns_ray
        n = self.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = n

        def run(data: ScreenData, chunks: Sequence[np.ndarray]) -> Iterable[ChunkRows]:
            return run_on_ray(data, chunks, n)

        return n, run

    def close(self) -> None:
        if self.owns_ray:
            import ray

            ray.shutdown()
            self.owns_ray = False


# ----------------------------------------------------------------------------- the dashboard's

#: bars of the analytics timeframe a dashboard screen covers (the store's before the memory's)
SCREEN_BARS = 20_000


@dataclass(frozen=True)
class ScreenOutcome:
    """A dashboard screen: ``table`` (``screen_frame``), ``excluded`` {symbol: reason} and the
    ``params`` of ``engine.screen.screen_bars``."""

    table: pd.DataFrame
    excluded: Mapping[str, str]
    params: Mapping[str, Any]


def screen_frame(table: pa.Table) -> pd.DataFrame:
    """A screen's rows (``engine.screen`` columns, a saved or a fresh screen) as the dashboard
    shows them: pair ("Y/X"), corr, eg_pvalue, qvalue, half_life (bars), beta, bars."""
    return pd.DataFrame(
        {
            "pair": [
                f"{y}/{x}"
                for y, x in zip(table["y"].to_pylist(), table["x"].to_pylist(), strict=True)
            ],
            "corr": table["corr"].to_numpy(),
            "eg_pvalue": table["pvalue"].to_numpy(),
            "qvalue": table["qvalue"].to_numpy(),
            "half_life": table["half_life"].to_numpy(),
            "beta": table["beta"].to_numpy(),
            "bars": table["n"].to_numpy(),
        }
    )


def _with_stored(
    bars: Mapping[str, np.ndarray], timeframe: str, store: str | os.PathLike | None
) -> dict[str, np.ndarray]:
    """Each symbol's bars in memory preceded by its stored bars, over the last ``SCREEN_BARS``
    bars of ``timeframe`` (the memory copy wins where both hold a bar time)."""
    held = {s: b for s, b in bars.items() if b.size}
    if store is None or not held or not os.path.isdir(store):
        return dict(bars)
    end = max(int(b["ts"][-1]) for b in held.values()) + timeframe_ms(timeframe)
    start = end - SCREEN_BARS * timeframe_ms(timeframe)
    stored = load_bars(store, timeframe, list(bars), start, end)
    out = {}
    for s, b in bars.items():
        old = stored[s]
        if b.size:
            old = old[old["ts"] < b["ts"][0]]
        out[s] = np.concatenate([old, b]) if old.size else b
    return out


def screen_recent(
    bars: Mapping[str, np.ndarray],
    price: str,
    timeframe: str,
    *,
    store: str | os.PathLike | None = None,
    min_bars: int = 100,
    max_carry: int | str = "auto",
    on_chunk: Callable[[int, int], None] | None = None,
) -> ScreenOutcome:
    """``engine.screen.screen_bars`` (the CLI's screen) over the symbols of ``bars``: the bars
    in memory with the store's before them (up to ``SCREEN_BARS``), in this process, closes
    carried at most ``max_carry`` bars (``analytics.max_carry``); ``on_chunk(done, total)`` is
    called as chunks of pairs finish."""

    def run(data: ScreenData, chunks: Sequence[np.ndarray]) -> Iterator[ChunkRows]:
        for k, rows in enumerate(run_in_process(data, chunks)):
            if on_chunk is not None:
                on_chunk(k + 1, len(chunks))
            yield rows

    merged = _with_stored(bars, timeframe, store)
    result = screen_bars(
        merged,
        timeframe,
        min_bars=min_bars,
        price=price,
        runner=lambda n_pairs: (1, run),
        max_carry=max_carry,
    )
    return ScreenOutcome(screen_frame(result.table), dict(result.universe.excluded), result.params)


class ScreenJob:
    """Body of the actor that runs one dashboard screen (``screen_recent``); made with
    ``max_concurrency=2`` so that ``progress()`` answers while ``run`` works."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress = (0, 0)

    def _done(self, done: int, total: int) -> None:
        with self._lock:
            self._progress = (done, total)

    def run(self, bars: Mapping[str, np.ndarray], price: str, timeframe: str, **kw: Any):
        """``screen_recent(bars, price, timeframe, **kw)`` with its progress recorded."""
        return screen_recent(bars, price, timeframe, on_chunk=self._done, **kw)

    def progress(self) -> tuple[int, int]:
        """(chunks done, chunks) of the running screen; (0, 0) before the chunks are planned."""
        with self._lock:
            return self._progress
