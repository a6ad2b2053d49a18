"""pairstack's engine: everything that does not need Ray or Panel.

Numba's on-disk cache keys a kernel by its own source file only, so a kernel that inlines a step
from another module (the pair step inlines the Kalman and rolling steps) would keep running stale
machine code after that other module changes. The cache therefore lives in a directory named by
a hash of every kernel source of the project (engine/ and strategies/): any change to them starts
a fresh cache. ``NUMBA_CACHE_DIR``, when set, is the parent of that directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba

_ROOT = Path(__file__).resolve().parent.parent


def kernel_sources_hash(root: Path = _ROOT) -> str:
    """Hash of every .py file under engine/ and strategies/ of ``root`` (16 hex digits)."""
    digest = hashlib.sha256()
    for folder in ("engine", "strategies"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _numba_cache_dir() -> Path:
    parent = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pairstack", "numba"
    )
    return Path(parent) / kernel_sources_hash()


numba.config.CACHE_DIR = str(_numba_cache_dir())
