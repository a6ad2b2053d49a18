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
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.screen import ChunkRows, ScreenData, run_in_process, screen_chunk

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
