"""Running the ``pairstack`` console script as a user does: from a fresh shell.

A subprocess that inherits the test runner's environment inherits what pytest's own ``ray.init``
put there (``RAY_AUTH_MODE``, addresses) and would pass where a user's shell fails, so CLI
subprocesses get only ``PATH`` and ``HOME``: the runner's home (where Ray keeps the token of the
test session's cluster), or a temporary one for a process that records an engine there (its
numba cache directory links to the runner's, so kernels are not compiled again).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numba

import engine  # noqa: F401  (sets numba's cache directory)

#: the console script of this virtual environment
PAIRSTACK = str(Path(sys.executable).with_name("pairstack"))


def pairstack(*args: str) -> list[str]:
    """The command line ``pairstack ARGS...``."""
    return [PAIRSTACK, *args]


def scrubbed_env(home: Path | None = None) -> dict[str, str]:
    """``{"PATH", "HOME"}`` only; ``HOME`` is ``home`` (made when missing) or the runner's."""
    if home is None:
        home = Path.home()
    else:
        numba_dir = home / ".cache" / "pairstack" / "numba"
        if not numba_dir.exists():
            numba_dir.parent.mkdir(parents=True, exist_ok=True)
            numba_dir.symlink_to(Path(numba.config.CACHE_DIR).parent, target_is_directory=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
