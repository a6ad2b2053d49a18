"""Pairs added to a running engine (the dashboard's "watch live"), kept in the store so that a
restarted Hub or PairActor hosts them again.

``<store>/state/pairs_added.json``: ``{pair actor name: ["Y/X", ...]}`` in the order added,
rewritten atomically by the Hub (its one writer) after the PairActor took the pairs. A pair
actor hosts an added pair only when both legs are among the symbols of its configured pairs
(its feeds send it only those): ``hosted`` is the one rule, applied alike by the Hub and the
PairActor, so a later engine sharded differently on the same store skips what it cannot feed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.atomic import write_atomic
from engine.errors import DataError
from engine.pairbook import parse_pair

#: where the added pairs are kept, under the store
ADDED_PATH = Path("state") / "pairs_added.json"


def added_path(store_path: str | os.PathLike) -> Path:
    return Path(store_path) / ADDED_PATH


def read_added(store_path: str | os.PathLike) -> dict[str, list[str]]:
    """``{pair actor name: [pair, ...]}`` added at run time ({} when none were)."""
    path = added_path(store_path)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        ok = isinstance(raw, dict) and all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in raw.values()
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raw, ok = str(exc), False
    if not ok:
        raise DataError(
            f"{path}: expected a JSON object {{pair actor: ['Y/X', ...]}}, found {str(raw)[:120]}; "
            "fix or delete the file (the pairs it names are then no longer watched)"
        )
    return {name: list(pairs) for name, pairs in raw.items()}


def record_added(store_path: str | os.PathLike, actor: str, pairs: list[str]) -> None:
    """Append ``pairs`` to ``actor``'s added pairs (each kept once), atomically."""
    added = read_added(store_path)
    mine = added.setdefault(actor, [])
    mine.extend(p for p in pairs if p not in mine)
    write_atomic(added_path(store_path), json.dumps(added, indent=1, sort_keys=True))


def hosted(base_pairs: list[str], added: list[str]) -> list[str]:
    """The ``added`` pairs an actor configured with ``base_pairs`` hosts: those not already
    among them whose two legs are symbols of ``base_pairs``, in order."""
    symbols = {s for p in base_pairs for s in parse_pair(p)}
    return [
        p
        for p in dict.fromkeys(added)
        if p not in base_pairs and set(parse_pair(p)) <= symbols
    ]
