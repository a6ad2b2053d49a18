"""Publisher: how a FeedActor's packets reach its PairActors, by bar lane or by actor call.

Each batch's publish entries go to every PairActor that needs some of their symbols as one
``engine.packets.BarPacket``: over the PairActor's bar lane (``engine.lane``: a direct socket,
about 0.1 ms where an actor call takes 1.5 ms or more) once it is open, else by an ``on_bars``
actor call, with at most ``MAX_IN_FLIGHT`` calls outstanding per PairActor (bounded with
``ray.wait``). A lane is opened only after the calls in flight have returned, so packets never
overtake each other; when its peer is gone (a restarted PairActor), packets go by call again
and the restarted actor's lane is asked for (what a dead socket swallowed, the restarted actor
reads from the feed's recent bars as it starts). A lane that cannot be connected to (a node
the socket cannot reach) is tried once per actor (re)start: calls are slower, nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from actors.args import lookup_actor
from engine import packets
from engine.lane import LaneSender

log = logging.getLogger(__name__)

#: outstanding on_bars calls per PairActor before the feed waits
MAX_IN_FLIGHT = 4
#: seconds before a lane is asked for again after one could not be connected to
LANE_RETRY_S = 60.0
#: seconds the publisher waits, once, for the calls in flight before it opens a lane
LANE_DRAIN_S = 1.0


@dataclass
class _Target:
    """One PairActor as the publisher sends to it."""

    actor: object  # its handle, or its name until the first publish looks it up
    symbols: set[str]
    calls: list = field(default_factory=list)  # refs of on_bars calls that may be in flight
    lane: LaneSender | None = None
    lane_ref: object | None = None  # the ref of a bar_lane() call, until the lane opens
    lane_after: float = 0.0  # monotonic s: no lane asked for before
    unreachable: bytes = b""  # the token of an actor whose lane could not be connected to


class Publisher:
    """Sends publish entries to PairActors. ``targets`` lists ``(pair actor, symbols it
    needs)``, the actor as a handle or as its name in ``namespace``, looked up at the first
    publish (a restarted feed does not depend on handles of the driver); only ``symbols`` (the
    feed's) are sent. Not thread-safe: one thread publishes."""

    def __init__(self, targets: Iterable[tuple[object, Iterable[str]]], symbols: Iterable[str],
                 namespace: str | None = None) -> None:  # fmt: skip
        mine = set(symbols)
        self._targets = [_Target(actor, set(syms) & mine) for actor, syms in targets]
        self._namespace = namespace

    def publish(self, entries: list[dict]) -> None:
        """One batch's entries (``{"symbol", "wm", "bars", "advances"}``), one packet per
        PairActor that needs some of them."""
        import ray

        for t in self._targets:
            mine = [e for e in entries if e["symbol"] in t.symbols]
            if not mine:
                continue
            if isinstance(t.actor, str):
                handle = lookup_actor(t.actor, self._namespace)
                if handle is None:
                    log.warning("pair actor %r not found: its bars are not published", t.actor)
                    continue
                t.actor = handle
            packet = packets.pack(mine)
            if t.lane is None:
                self._open_lane(t)
            if t.lane is not None:
                if t.lane.send(packet):
                    continue
                t.lane.close()  # the PairActor is gone: calls until its successor's lane
                t.lane = None
            t.calls.append(t.actor.on_bars.remote(packet))
            if len(t.calls) > MAX_IN_FLIGHT:
                _, t.calls[:] = ray.wait(t.calls, num_returns=len(t.calls) - MAX_IN_FLIGHT)
            if t.lane_ref is None and time.monotonic() >= t.lane_after:
                t.lane_ref = t.actor.bar_lane.remote()

    @staticmethod
    def _open_lane(t: _Target) -> None:
        """Open ``t``'s lane once its address is known, after the calls in flight (waited for
        once, at most ``LANE_DRAIN_S``: packets must not overtake them)."""
        import ray

        if t.lane_ref is None or not ray.wait([t.lane_ref], timeout=0)[0]:
            return
        if len(ray.wait(t.calls, num_returns=len(t.calls), timeout=LANE_DRAIN_S)[0]) < len(t.calls):
            return
        ref, t.lane_ref, t.calls = t.lane_ref, None, []
        try:
            host, port, token = ray.get(ref)
        except ray.exceptions.RayActorError:  # the actor died meanwhile: its successor is asked
            return
        except ray.exceptions.RayError as exc:  # it could not open one: calls for a while
            log.warning("the pair actor opened no bar lane (%s): it gets actor calls", exc)
            t.lane_after = time.monotonic() + LANE_RETRY_S
            return
        if token == t.unreachable:  # the same actor: the same port is still out of reach
            t.lane_after = time.monotonic() + LANE_RETRY_S
            return
        try:
            t.lane = LaneSender((host, port), token)
        except OSError as exc:
            log.warning("no bar lane to the pair actor at %s:%d (%s): it gets actor calls",
                        host, port, exc)  # fmt: skip
            t.unreachable = token
            t.lane_after = time.monotonic() + LANE_RETRY_S

    def close(self, wait_s: float) -> None:
        """Close the lanes and wait for the calls in flight (each at most ``wait_s``): on
        return, everything published is in the PairActors' books."""
        import ray

        for t in self._targets:
            if t.lane is not None:
                t.lane.close(wait_s=wait_s)
                t.lane = None
            ray.wait(t.calls, num_returns=len(t.calls), timeout=wait_s)
