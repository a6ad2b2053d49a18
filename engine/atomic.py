"""The one atomic file write: a crash never leaves a half file under the final name.

``atomic_path(final)`` yields a temporary path in the same directory (``.<name>.<random>.tmp``,
a dotted name that pyarrow, DuckDB and polars skip); the caller writes it; on success the file
is fsynced, renamed over ``final`` (``os.replace``) and the directory fsynced, so both the
content and the rename survive a power cut. On an error the temporary file is removed.
``durable=False`` skips the two fsyncs (tests and throw-away stores).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside ``final`` to write; renamed over ``final`` when the block ends."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        if durable:
            fsync_path(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(final.parent)


def write_atomic(final: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``final`` atomically and durably."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
