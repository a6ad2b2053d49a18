"""Binance aggTrades CSV bytes -> tick records in one numba pass: the fast path of
``engine.importer``.

``agg_trade_blocks(stream, header=..., block_bytes=..., min_ms=..., max_ms=...)`` reads the CSV
from a binary stream in blocks of ``block_bytes`` (the longest line it takes) and yields
``TICK_DTYPE`` records block by block. It *vouches* only for rows it is certain of, exactly
what the reference reader (pyarrow's CSV reader plus ``engine.importer``'s checks) makes of
them: ``id,price,qty,first_id,last_id,time,true|false`` with ``\\n`` or ``\\r\\n`` line ends,
ids of 1 to 18 digits (no sign), ``agg_trade_id`` strictly increasing, ``last_id >= first_id``,
price and quantity ``digits[.digits]`` above 0, times in ms within ``[min_ms, max_ms)`` and in
order, decimals of up to 40 digits, as correctly rounded doubles, as pyarrow's parse gives: up
to 15 digits as ``m / 10**k`` (``m < 10**15 < 2**53``, ``k <= 15``, both exact, so the
division is correctly rounded: Clinger's fast path, as in ``engine.aggparse``), longer ones by
the C library's ``strtod``, which must stop where the digits do. On the first row
it cannot vouch for (anything else: microsecond or second times, ``True``, exponents, empty
lines, too many digits, a line longer than a block, a malformed row) it raises
``NotVouched``: the caller reads the file with the reference reader, which accepts the file
or names the line and column that is wrong.
"""

from __future__ import annotations

import io
import mmap
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from engine.schemas import TICK_DTYPE

__all__ = ["NotVouched", "agg_trade_blocks", "load_kernel"]

_COMMA, _DOT, _CR, _LF = 44, 46, 13, 10
_ZERO = np.uint64(48)
_MAX_DIGITS = 18  # ints up to 18 digits cannot exceed int64
_EXACT_DIGITS = 15  # a decimal of at most 15 digits is m / 10**k with m < 10**15 < 2**53
_MAX_DECIMAL_DIGITS = 40  # longer ones (never seen in Binance's files) go to the reference
_POW10 = np.array([10.0**k for k in range(_EXACT_DIGITS + 1)])  # exact: 5**15 < 2**53
_MIN_LINE = 28  # bytes of the shortest line vouched for: "0,1,1,0,0,<13-digit ms>,true\n"
_TRUE = np.frombuffer(b"true", np.uint8).copy()
_VOUCHED, _REFUSED, _LONG = 0, -1, -2  # a row's status (-1, -2: also _positive's index)
_FALSE = np.frombuffer(b"false", np.uint8).copy()


class NotVouched(Exception):
    """A row the fast path cannot vouch for; the reference reader must decide."""


@njit(cache=True, inline="always")
def _digits(p, i, v):
    """``(index after the digits at i, v folded with them in base 10)``."""
    while True:  # two digits a step: half the multiply chain
        d = np.uint64(p[i]) - _ZERO  # wraps below "0": one comparison per byte
        if d >= 10:
            return i, v
        e = np.uint64(p[i + 1]) - _ZERO  # p[i] is a digit, so p[i + 1] exists
        if e >= 10:
            return i + 1, v * 10 + np.int64(d)
        v = v * 100 + np.int64(d * 10 + e)
        i += 2


@njit(cache=True, inline="always")
def _uint(p, i):
    """``(index after it, value)`` of 1 to 18 digits at ``i``; ``(-1, 0)`` when not that."""
    j, v = _digits(p, i, 0)
    if j == i or j - i > _MAX_DIGITS:
        return -1, 0
    return j, v


@intrinsic
def _strtod(typingctx, buf, at, end):
    """The C library's ``strtod(&buf[at], &end[0])``: the correctly rounded double of the
    decimal text at ``buf[at]``; ``end[0]`` gets the address where the parse stopped. A named
    symbol, not a ctypes address, so the kernel stays cacheable."""
    if not (isinstance(buf, types.Array) and isinstance(end, types.Array)
            and buf.dtype == types.uint8 and end.dtype == types.int64):  # fmt: skip
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        out = context.make_array(signature.args[2])(context, builder, args[2]).data
        char_p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.DoubleType(), [char_p, char_p.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "strtod")
        start = builder.bitcast(builder.gep(data, [args[1]]), char_p)
        return builder.call(fn, [start, builder.bitcast(out, char_p.as_pointer())])

    return types.float64(buf, at, end), codegen


@njit(cache=True, inline="always")
def _positive(p, i, scratch, slow):
    """``(index after it, value)`` of a decimal ``digits[.digits]`` > 0 at ``i``; ``(-1, 0.0)``
    otherwise. Up to 15 digits: ``m / 10**k`` (exact); up to 40: ``(_LONG, 0.0)`` unless
    ``slow`` (a constant), then ``strtod``, which must stop where the digits do (``scratch``:
    one int64 for its end address)."""
    j, m = _digits(p, i, 0)
    n = j - i
    k = 0
    if n == 0:
        return -1, 0.0
    if p[j] == _DOT:
        s = j + 1
        j, m = _digits(p, s, m)
        k = j - s
        n += k
        if k == 0:
            return -1, 0.0
    if n <= _EXACT_DIGITS:
        return (j, m / _POW10[k]) if m else (-1, 0.0)
    if n > _MAX_DECIMAL_DIGITS:
        return -1, 0.0
    if not slow:
        return _LONG, 0.0
    v = _strtod(p, i, scratch)
    return (j, v) if v > 0.0 and scratch[0] == p.ctypes.data + j else (-1, 0.0)


@njit(cache=True, inline="always")
def _word(p, i, word):
    """Index after ``word`` (uint8 array) at ``i``; -1 when the bytes differ (stops at the
    first difference, so it never reads past a line end)."""
    for k in range(word.shape[0]):
        if p[i + k] != word[k]:
            return -1
    return i + word.shape[0]


@njit(cache=True, inline="always")
def _lines(buf, i, row, ts, agg_id, price, qty, first_id, last_id, maker, prev_id, prev_ts,
           min_ms, max_ms, slow):  # fmt: skip
    """Rows of ``buf[i:]`` (complete lines: ``buf`` ends with ``\\n``) into the column arrays
    from row ``row`` on, each checked against the row before (``prev_id``, ``prev_ts``; -1 and
    ``min_ms`` at the start of a file).

    Returns ``(status, i, row, prev_id, prev_ts)``: ``_VOUCHED`` when every row is parsed;
    ``_REFUSED``: the row at ``buf[i]`` (row ``row``) is one the fast path cannot vouch for,
    or the columns are full; ``_LONG`` (only when not ``slow``, a constant): it has a decimal
    of 16 to 40 digits, for ``strtod``. Oracle: a plain-Python parse, ``int`` and ``float`` of
    the fields, and the reference import path (tests/engine/test_aggcsv.py)."""
    p = buf
    end = buf.shape[0]
    size = ts.shape[0]
    end_at = np.empty(1 if slow else 0, dtype=np.int64)  # strtod's end pointer
    while i < end:
        if row == size:
            return _REFUSED, i, row, prev_id, prev_ts
        j, a = _uint(p, i)
        if j < 0 or p[j] != _COMMA or a <= prev_id:
            return _REFUSED, i, row, prev_id, prev_ts
        j, pr = _positive(p, j + 1, end_at, slow)
        if j < 0 or p[j] != _COMMA:
            return (_LONG if j == _LONG else _REFUSED), i, row, prev_id, prev_ts
        j, q = _positive(p, j + 1, end_at, slow)
        if j < 0 or p[j] != _COMMA:
            return (_LONG if j == _LONG else _REFUSED), i, row, prev_id, prev_ts
        j, f = _uint(p, j + 1)
        if j < 0 or p[j] != _COMMA:
            return _REFUSED, i, row, prev_id, prev_ts
        j, la = _uint(p, j + 1)
        if j < 0 or p[j] != _COMMA or la < f:
            return _REFUSED, i, row, prev_id, prev_ts
        j, t = _uint(p, j + 1)
        if j < 0 or p[j] != _COMMA or t < prev_ts or t < min_ms or t >= max_ms:
            return _REFUSED, i, row, prev_id, prev_ts
        j += 1
        m = p[j] == 116  # t
        j = _word(p, j, _TRUE if m else _FALSE)
        if j >= 0 and p[j] == _CR:
            j += 1
        if j < 0 or p[j] != _LF:
            return _REFUSED, i, row, prev_id, prev_ts
        ts[row], agg_id[row], price[row], qty[row] = t, a, pr, q
        first_id[row], last_id[row], maker[row] = f, la, m
        prev_id, prev_ts = a, t
        row += 1
        i = j + 1
    return _VOUCHED, i, row, prev_id, prev_ts


@njit(cache=True, nogil=True)
def _fast_lines(buf, i, row, ts, agg_id, price, qty, first_id, last_id, maker, prev_id,
                prev_ts, min_ms, max_ms):  # fmt: skip
    """``_lines`` without ``strtod``: it stops at a row with a long decimal (``_LONG``). A
    call in the loop costs the loop its registers: about a fifth of its time."""
    return _lines(buf, i, row, ts, agg_id, price, qty, first_id, last_id, maker, prev_id,
                  prev_ts, min_ms, max_ms, False)  # fmt: skip


@njit(cache=True, nogil=True)
def _slow_lines(buf, i, row, ts, agg_id, price, qty, first_id, last_id, maker, prev_id,
                prev_ts, min_ms, max_ms):  # fmt: skip
    """``_lines`` with ``strtod`` for decimals of 16 to 40 digits (for the rows ``_fast_lines``
    stopped at)."""
    return _lines(buf, i, row, ts, agg_id, price, qty, first_id, last_id, maker, prev_id,
                  prev_ts, min_ms, max_ms, True)  # fmt: skip


def _columns(size: int) -> dict[str, np.ndarray]:
    """Uninitialised tick columns of ``size`` rows in one block of Arrow's memory pool, which
    keeps freed memory for the next block: NumPy's own (``np.empty``) goes back to the OS and
    is faulted in again page by page, about a fifth of the parse's time. Only the pages
    written are touched."""
    memory = np.frombuffer(pa.allocate_buffer(size * TICK_DTYPE.itemsize), dtype=np.uint8)
    cols = {}
    at = 0
    for name in TICK_DTYPE.names:  # 64-bit columns first: each stays 8-byte aligned
        dtype = TICK_DTYPE[name]
        cols[name] = memory[at : at + size * dtype.itemsize].view(dtype)
        at += size * dtype.itemsize
    return cols


def _read_windows(stream: BinaryIO, block_bytes: int) -> Iterator[np.ndarray]:
    """The stream's bytes as windows of complete lines (each ends with ``\\n``) of at most
    ``block_bytes`` (+ 1 for a line end added after a last line without one), read into one
    buffer: a window is only valid until the next is asked for. ``NotVouched`` for a longer
    line."""
    buf = bytearray(block_bytes + 1)
    view = memoryview(buf)
    n = 0  # bytes held
    eof = False
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
        yield np.frombuffer(view[:cut], dtype=np.uint8)
        buf[: n - cut] = buf[cut:n]
        n -= cut


def _mapped_windows(mapped: mmap.mmap, at: int, block_bytes: int) -> Iterator[np.ndarray]:
    """``_read_windows`` of a file mapped in memory from byte ``at``: views of the mapping,
    nothing copied (the page cache is read in place) but a last line without a line end.
    The pages of a window are unmapped once the next is asked for (``MADV_DONTNEED``; they
    stay in the page cache), so the mapping holds about a window of resident memory."""
    data = np.frombuffer(mapped, dtype=np.uint8)
    size = len(data)
    done = 0  # bytes before this (a page boundary) are let go
    while at < size:
        end = min(at + block_bytes, size)
        cut = mapped.rfind(b"\n", at, end) + 1
        if not cut:
            if end < size:
                raise NotVouched("a line longer than a block")
            yield np.frombuffer(bytes(data[at:]) + b"\n", dtype=np.uint8)
            return
        yield data[at:cut]
        at = cut
        page = cut - cut % mmap.PAGESIZE
        if page > done:
            mapped.madvise(mmap.MADV_DONTNEED, done, page - done)
            done = page


def _windows(stream: BinaryIO, block_bytes: int) -> Iterator[np.ndarray]:
    """``_mapped_windows`` of a stream that is a file on disk (from its position), else
    ``_read_windows``."""
    try:
        mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):  # not a file, empty
        return _read_windows(stream, block_bytes)
    return _mapped_windows(mapped, stream.tell(), block_bytes)


def agg_trade_blocks(stream: BinaryIO, *, header: bool, block_bytes: int, min_ms: int,
                     max_ms: int) -> Iterator[dict[str, np.ndarray]]:  # fmt: skip
    """Tick columns (``TICK_DTYPE``'s names and types, contiguous) of an aggTrades CSV
    ``stream`` (from its position; a file on disk is mapped, not read), a block of at most
    ``block_bytes`` bytes at a time (times in ms, ``[min_ms, max_ms)``); ``header``: skip the
    first line. Raises ``NotVouched`` at the first row the fast path cannot vouch for (module
    doc)."""
    skip = header
    prev_id, prev_ts = -1, min_ms
    for data in _windows(stream, block_bytes):
        start = int(np.argmax(data == _LF)) + 1 if skip else 0
        skip = False
        cols = _columns((len(data) - start) // _MIN_LINE + 1)
        status, at, rows, prev_id, prev_ts = _fast_lines(data, start, 0, *cols.values(), prev_id,
                                                         prev_ts, min_ms, max_ms)  # fmt: skip
        if status == _LONG:  # a decimal of 16 to 40 digits: the rest of the block with strtod
            status, at, rows, prev_id, prev_ts = _slow_lines(data, at, rows, *cols.values(),
                                                             prev_id, prev_ts, min_ms, max_ms)
        if status != _VOUCHED:
            raise NotVouched(f"row {rows} of a block")
        if rows:
            yield {name: col[:rows] for name, col in cols.items()}


_kernel_loaded = False


def load_kernel() -> None:
    """Load (or compile) the kernels with the types ``agg_trade_blocks`` calls them with (a
    row with a long decimal takes the second): about 0.3 s in a fresh process (numba's
    start-up), seconds when numba's cache is cold. Later calls do nothing;
    ``agg_trade_blocks`` works without it (the first block pays instead)."""
    global _kernel_loaded
    if not _kernel_loaded:
        rows = b"1,1,1,1,1,1717200000000,true\n2,1.0000000000000001,1,1,1,1717200000000,true\n"
        for _ in agg_trade_blocks(io.BytesIO(rows), header=False, block_bytes=len(rows),
                                  min_ms=0, max_ms=2**62):  # fmt: skip
            pass
        _kernel_loaded = True
