"""Server-wide runner of the History tab's computations: one ResearchActor, one thread.

Sessions never call Ray. A session hands a request to :class:`HistoryJobs` (``catalog()`` or
``history(...)``), which returns a :class:`Job` at once; a daemon thread creates the
``actors.research.ResearchActor`` (once, on the store of the served config), submits the calls
and waits on their ObjectRefs with ``ray.wait``; the session's periodic callback reads
``job.done``/``job.value``/``job.error`` without blocking.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CACHE_KEY = "pairstack-history"
#: seconds the thread waits on pending refs per turn
WAIT_S = 0.2
_lock = threading.Lock()


@dataclass
class Job:
    """One call to the ResearchActor: ``done`` once ``value`` or ``error`` (text) is set."""

    method: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    done: bool = False
    value: Any = None
    error: str | None = None


class HistoryJobs:
    """Submits Jobs to one ResearchActor on ``store`` from a daemon thread; ``max_carry``: the
    served config's ``analytics.max_carry``, handed to the actor."""

    def __init__(self, store: str, max_carry: int | str = "auto"):
        self.store = store
        self.max_carry = max_carry
        self._queue: queue.Queue[Job] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pairstack-history", daemon=True)
        self._thread.start()

    def submit(self, method: str, *args: Any, **kwargs: Any) -> Job:
        """Queue ``ResearchActor.<method>(*args, **kwargs)``; returns its Job at once."""
        job = Job(method, args, kwargs)
        self._queue.put(job)
        return job

    def stop(self) -> None:
        """End the thread (pending Jobs stay undone); the actor dies with its owner."""
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        import ray

        from actors.research import ResearchActor

        actor = None
        pending: dict[Any, Job] = {}
        while not self._stop.is_set():
            try:
                while True:
                    job = self._queue.get(block=not pending, timeout=WAIT_S)
                    if actor is None:
                        actor = ray.remote(num_cpus=0)(ResearchActor).remote(
                            self.store, self.max_carry
                        )
                    ref = getattr(actor, job.method).remote(*job.args, **job.kwargs)
                    pending[ref] = job
            except queue.Empty:
                pass
            if not pending:
                continue
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=WAIT_S)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    job.value = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    job.error = str(exc.cause if exc.cause is not None else exc)
                except ray.exceptions.RayError as exc:
                    job.error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("history job %s failed: %s", job.method, exc)
                job.done = True


def history_jobs(store: str, max_carry: int | str) -> HistoryJobs:
    """The server's one HistoryJobs (made at first use, kept in ``pn.state.cache``) on the
    served config's store and ``analytics.max_carry``."""
    import panel as pn

    with _lock:
        jobs = pn.state.cache.get(CACHE_KEY)
        if jobs is None:
            jobs = pn.state.cache[CACHE_KEY] = HistoryJobs(store, max_carry)
        return jobs
