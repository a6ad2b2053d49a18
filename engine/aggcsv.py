"""Binance aggTrades CSV bytes -> tick records in one numba pass: the fast path of
``engine.importer``.

``agg_trade_blocks(stream, header=..., block_bytes=..., min_ms=..., max_ms=...)`` reads the CSV
from a binary stream in blocks of ``block_bytes`` (the longest line it takes) and yields
``TICK_DTYPE`` records block by block. It *vouches* only for rows it is certain of, exactly
what the reference reader (pyarrow's CSV reader plus ``engine.importer``'s checks) makes of
them: ``id,price,qty,first_id,last_id,time,true|false`` with ``\\n`` or ``\\r\\n`` line ends,
ids of 1 to 18 digits (no sign), ``agg_trade_id`` strictly increasing, ``last_id >= first_id``,
price and quantity ``digits[.digits]`` above 0, times in ms within ``[min_ms, max_ms)`` and in
order. Decimals are ``m / 10**k`` with ``m < 2**53`` and ``k <= 22`` (both exact, so correctly
rounded, as pyarrow's parse is; ``engine.aggparse`` uses the same fast path). On the first row
it cannot vouch for (anything else: microsecond or second times, ``True``, exponents, empty
lines, too many digits, a line longer than a block, a malformed row) it raises
``NotVouched``: the caller reads the file with the reference reader, which accepts the file
or names the line and column that is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
from numba import njit

from engine.aggparse import _POW10, _mantissa
from engine.schemas import TICK_DTYPE

__all__ = ["NotVouched", "agg_trade_blocks"]

_COMMA, _DOT, _CR, _LF = 44, 46, 13, 10
_MAX_DIGITS = 18  # ints up to 18 digits cannot exceed int64
_MIN_LINE = 28  # bytes of the shortest line vouched for: "0,1,1,0,0,<13-digit ms>,true\n"
_TRUE = np.frombuffer(b"true", np.uint8).copy()
_FALSE = np.frombuffer(b"false", np.uint8).copy()


class NotVouched(Exception):
    """A row the fast path cannot vouch for; the reference reader must decide."""


@njit(cache=True, inline="always")
def _uint(p, i):
    """``(index after it, value)`` of 1 to 18 digits at ``i``; ``(-1, 0)`` when not that."""
    j = i
    v = 0
    while 48 <= p[j] <= 57:
        v = v * 10 + (p[j] - 48)
        j += 1
    if j == i or j - i > _MAX_DIGITS:
        return -1, 0
    return j, v


@njit(cache=True, inline="always")
def _positive(p, i, end):
    """``(index after it, value)`` of a decimal ``digits[.digits]`` > 0 at ``i`` whose value
    the exact fast path gives; ``(-1, 0.0)`` otherwise."""
    j, m, exact = _mantissa(p, i, end, 0, True)
    if j == i:
        return -1, 0.0
    k = 0
    if p[j] == _DOT:
        s = j + 1
        j, m, exact = _mantissa(p, s, end, m, exact)
        k = j - s
        if k == 0 or k > 22:
            return -1, 0.0
    if not exact or m == 0:
        return -1, 0.0
    return j, m / _POW10[k]


@njit(cache=True, inline="always")
def _word(p, i, word):
    """Index after ``word`` (uint8 array) at ``i``; -1 when the bytes differ (stops at the
    first difference, so it never reads past a line end)."""
    for k in range(word.shape[0]):
        if p[i + k] != word[k]:
            return -1
    return i + word.shape[0]


@njit(cache=True, nogil=True)
def _parse_lines(buf, start, out, last_id, last_ts, min_ms, max_ms):
    """Rows of ``buf[start:]`` (complete lines: ``buf`` ends with ``\\n``) into ``out``
    (TICK_DTYPE, one row per line), each checked against the previous row (``last_id``,
    ``last_ts``; -1 and ``min_ms`` at the start of a file).

    Returns ``(rows, last_id, last_ts, vouched)``; ``vouched`` False: row ``rows`` is one the
    fast path cannot vouch for (rows before it are parsed). Oracle: pyarrow's CSV reader and
    ``engine.importer``'s checks (tests/engine/test_aggcsv.py)."""
    p = buf
    end = buf.shape[0]
    i = start
    row = 0
    while i < end:
        j, a = _uint(p, i)
        if j < 0 or p[j] != _COMMA or a <= last_id:
            return row, last_id, last_ts, False
        j, price = _positive(p, j + 1, end)
        if j < 0 or p[j] != _COMMA:
            return row, last_id, last_ts, False
        j, qty = _positive(p, j + 1, end)
        if j < 0 or p[j] != _COMMA:
            return row, last_id, last_ts, False
        j, first = _uint(p, j + 1)
        if j < 0 or p[j] != _COMMA:
            return row, last_id, last_ts, False
        j, last = _uint(p, j + 1)
        if j < 0 or p[j] != _COMMA or last < first:
            return row, last_id, last_ts, False
        j, t = _uint(p, j + 1)
        if j < 0 or p[j] != _COMMA or t < last_ts or t < min_ms or t >= max_ms:
            return row, last_id, last_ts, False
        j += 1
        maker = p[j] == 116  # t
        j = _word(p, j, _TRUE if maker else _FALSE)
        if j >= 0 and p[j] == _CR:
            j += 1
        if j < 0 or p[j] != _LF:
            return row, last_id, last_ts, False
        tick = out[row]
        tick.ts, tick.agg_id, tick.price, tick.qty = t, a, price, qty
        tick.first_id, tick.last_id, tick.buyer_maker = first, last, maker
        last_id, last_ts = a, t
        row += 1
        i = j + 1
    return row, last_id, last_ts, True


def agg_trade_blocks(stream: BinaryIO, *, header: bool, block_bytes: int, min_ms: int,
                     max_ms: int) -> Iterator[np.ndarray]:  # fmt: skip
    """TICK_DTYPE records of an aggTrades CSV ``stream``, a block of at most ``block_bytes``
    bytes at a time (times in ms, ``[min_ms, max_ms)``); ``header``: skip the first line.
    Raises ``NotVouched`` at the first row the fast path cannot vouch for (module doc)."""
    buf = bytearray(block_bytes + 1)  # + 1: a line end added after a last line without one
    view = memoryview(buf)
    n = 0  # bytes held
    eof = False
    skip = header
    last_id, last_ts = -1, min_ms
    while True:
        while n < block_bytes and not eof:
            got = stream.readinto(view[n:block_bytes])
            eof = not got
            n += got or 0
        if eof and n and buf[n - 1] != _LF:
            buf[n] = _LF
            n += 1
        cut = buf.rfind(b"\n", 0, n) + 1
        if not cut:
            if n:
                raise NotVouched("a line longer than a block")
            return
        start = buf.find(b"\n", 0, cut) + 1 if skip else 0
        skip = False
        out = np.empty((cut - start) // _MIN_LINE, dtype=TICK_DTYPE)  # pages touched: rows
        data = np.frombuffer(view[:cut], dtype=np.uint8)
        rows, last_id, last_ts, vouched = _parse_lines(data, start, out, last_id, last_ts,
                                                       min_ms, max_ms)  # fmt: skip
        if not vouched:
            raise NotVouched(f"row {rows} of a block")
        if rows:
            yield out[:rows]
        buf[: n - cut] = buf[cut:n]
        n -= cut
