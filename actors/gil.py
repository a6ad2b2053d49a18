"""GIL hand-over in the engine's actor processes.

A FeedActor's event loop shares its process with the store writer thread, and a PairActor's
``on_bars`` with its checkpoint writer. CPython hands the GIL to a waiting thread only after the
running one has held it for the switch interval (5 ms by default), so a bar close that arrives
while the other thread runs Python code waited up to 5 ms before it was even looked at. These
processes run little Python besides, so a short interval costs them next to nothing.
"""

from __future__ import annotations

import sys

#: seconds a thread may hold the GIL while another waits for it (CPython's default: 0.005)
SWITCH_INTERVAL_S = 0.0005


def hand_over_quickly() -> None:
    """Set this process's GIL switch interval to ``SWITCH_INTERVAL_S``."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
