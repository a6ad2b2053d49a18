"""PairBook checkpoints: plain arrays in a ``.npz`` file, never pickle.

``<store>/state/pairs/<name>.npz`` holds the arrays of ``PairBook.checkpoint()`` plus two
entries checked before any state is used: ``__version__`` (the layout, CHECKPOINT_VERSION) and
``__fingerprint__`` (``config_fingerprint``: analytics, strategy and pairs as JSON text). It is
read with ``np.load(..., allow_pickle=False)``, so a file dropped there is data or nothing: an
unreadable, foreign or old-format file (a leftover ``<name>.pkl`` of older versions included) is
ignored with a logged warning and its actor replays the stored bars in full. Written atomically
(``engine.atomic``).
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import msgspec
import numpy as np
from numpy.lib.npyio import NpzFile

from engine.atomic import atomic_path
from engine.config import AnalyticsConfig, StrategyConfig

log = logging.getLogger(__name__)

#: layout version of the checkpoint files (2: npz of PairBook arrays; 1 was a pickle)
CHECKPOINT_VERSION = 2
_VERSION = "__version__"
_FINGERPRINT = "__fingerprint__"


def config_fingerprint(
    analytics: AnalyticsConfig, strategy: StrategyConfig, pairs: list[str]
) -> str:
    """What a checkpoint's state depends on: analytics, strategy, the pairs (JSON text)."""
    return msgspec.json.encode(
        {"analytics": analytics, "strategy": strategy, "pairs": list(pairs)}
    ).decode()


def checkpoint_path(store_path: str, name: str) -> Path:
    """``<store>/state/pairs/<name>.npz``: where the PairActor ``name`` keeps its checkpoint."""
    return Path(store_path) / "state" / "pairs" / f"{name}.npz"


def write_checkpoint(path: Path, fingerprint: str, state: dict[str, np.ndarray]) -> None:
    """Write a book's state (plain arrays, no object dtype) atomically, with version and
    fingerprint."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            **{_VERSION: np.int64(CHECKPOINT_VERSION), _FINGERPRINT: np.array(fingerprint)},
            **state,
        )


def read_checkpoint(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    """The state saved at ``path`` if it has this layout version and was taken under the same
    config (``fingerprint``), else None (logged: the caller replays in full)."""
    legacy = path.with_suffix(".pkl")
    if legacy.exists():
        log.warning("checkpoint %s is of an old format (pickle): never loaded; remove it", legacy)
    try:
        saved = _arrays(path)
        version = int(saved.pop(_VERSION))
        taken_under = str(saved.pop(_FINGERPRINT))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("checkpoint %s unreadable (%s): full replay", path, exc)
        return None
    if version != CHECKPOINT_VERSION:
        log.warning(
            "checkpoint %s has layout version %d, expected %d: full replay",
            path, version, CHECKPOINT_VERSION,
        )  # fmt: skip
        return None
    if taken_under != fingerprint:
        log.warning("checkpoint %s was taken under another config: full replay", path)
        return None
    return saved


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz archive at ``path``, loaded without pickle."""
    saved = np.load(path, allow_pickle=False)
    if not isinstance(saved, NpzFile):
        raise ValueError("expected an npz archive, found a single array")
    with saved:
        return {k: saved[k] for k in saved.files}
