"""Combined aggTrade frames -> columns in one numba pass: the fast path of ``engine.validate``.

``parse_agg_trades(buf, n, symbols, streams)`` reads ``n`` frames joined by NUL bytes in ``buf``
(no frame that holds one can be JSON) and parses exactly the combined envelope
``{"stream": <name>, "data": {"e": "aggTrade", "E", "s", "a", "p", "q", "f", "l", "T", "m"}}``:
keys in any order, JSON whitespace, extra keys with scalar values ignored (as msgspec does).

A frame is *vouched* only when it is certainly what msgspec's strict ``binance.CombinedFrame``
decode makes of it, an ``AggTrade`` with these values; anything else is *refused* and left to
the msgspec paths, which stay the reference: escapes or bytes outside printable ASCII in any
string, duplicate or missing keys, extra keys with arrays or objects, ``e`` other than
``aggTrade`` (markPrice frames, control replies), ints that are negative or longer than 18
digits, decimals outside ``binance.DECIMAL_PATTERN``, a stream name not in ``streams``,
trailing bytes. An unknown symbol text is vouched (code -1): the caller rejects it.

Decimals become floats equal to Python's ``float(text)``: digits ``m`` (an integer) over
``10**k`` when ``m < 2**53`` and ``k <= 22`` (both exact, and IEEE division rounds correctly:
Clinger's fast path); the others (rare: more than 15 significant digits) go through ``float``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from engine.schemas import TICK_DTYPE

__all__ = ["AggColumns", "NameTable", "load_kernel", "name_table", "parse_agg_trades"]

_POW10 = np.array([10.0**k for k in range(23)])  # exact: 10**k = 5**k * 2**k, 5**22 < 2**53
_EXACT = 2**53
_MAX_DIGITS = 18  # ints up to 18 digits cannot exceed int64

# payload keys (one letter each): a bit per key, a frame is vouched only with all, each once
_PAYLOAD_KEYS = "eEsapqflTm"
_KEY_BIT = np.zeros(128, dtype=np.int64)
for _k, _c in enumerate(_PAYLOAD_KEYS):
    _KEY_BIT[ord(_c)] = 1 << _k
_ALL_KEYS = (1 << len(_PAYLOAD_KEYS)) - 1
_K_STREAM, _K_DATA = 1, 2


def _ascii(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), np.uint8).copy()


_AGG_TRADE, _STREAM, _DATA = _ascii("aggTrade"), _ascii("stream"), _ascii("data")
_TRUE, _FALSE, _NULL = _ascii("true"), _ascii("false"), _ascii("null")
_QUOTE, _BACKSLASH, _COLON, _COMMA, _DOT = 34, 92, 58, 44, 46
_LBRACE, _RBRACE, _MINUS, _PLUS = 123, 125, 45, 43


@dataclass(frozen=True)
class NameTable:
    """Names as a padded byte matrix (one row each) and their byte lengths; -1 for a name that
    is not printable ASCII (never matched: a frame carrying such text is refused anyway)."""

    names: tuple[str, ...]
    data: np.ndarray  # uint8 (len(names), longest)
    lens: np.ndarray  # int64 (len(names),)


def name_table(names: Sequence[str]) -> NameTable:
    """The ``NameTable`` of ``names`` (strings)."""
    raw = [n.encode("utf-8", "surrogatepass") for n in names]
    lens = [len(r) if all(0x20 <= c <= 0x7E and c not in b'"\\' for c in r) else -1 for r in raw]
    data = np.zeros((len(raw), max((len(r) for r in raw), default=0)), dtype=np.uint8)
    for k, r in enumerate(raw):
        data[k, : len(r)] = np.frombuffer(r, np.uint8)
    return NameTable(tuple(names), data, np.array(lens, dtype=np.int64))


@dataclass
class AggColumns:
    """Per frame: ``ticks`` (TICK_DTYPE: ``T``, ``a``, ``p``, ``q``, ``f``, ``l``, ``m``),
    ``event_ms`` int64 (``E``), ``symbol`` int64 index into the symbols (-1 unknown), and
    ``vouched`` bool (False: that frame's row is meaningless). ``stream_seen`` int64 counts
    vouched frames per stream of the table."""

    ticks: np.ndarray
    event_ms: np.ndarray
    symbol: np.ndarray
    vouched: np.ndarray
    stream_seen: np.ndarray


# -- kernel ----------------------------------------------------------------------------------
# The helpers take a pointer to the bytes, not the array: numba counts references of every
# array passed to a call (two atomic operations each), which would cost more than the parsing.
# The smallest are inlined by numba (inline="always": a tenth faster; inlining the larger ones
# too saves a little more but multiplies the compile time).


@intrinsic
def _address(typingctx, arr):
    """Pointer to the data of a C-contiguous array (indexable like the flat array; the array
    must outlive its use)."""
    if not isinstance(arr, types.Array) or arr.layout != "C":
        return None

    def codegen(context, builder, signature, args):
        return context.make_array(signature.args[0])(context, builder, args[0]).data

    return types.CPointer(arr.dtype)(arr), codegen


@njit(cache=True, inline="always")
def _ws(p, i, end):
    """Index of the first byte at or after ``i`` that is not JSON whitespace (``end`` if none)."""
    while i < end:
        c = p[i]
        if c > 32 or (c != 32 and c != 10 and c != 13 and c != 9):
            return i
        i += 1
    return i


@njit(cache=True, inline="always")
def _string_end(p, i, end):
    """Index of the closing quote of a string whose text starts at ``i``; -1 when the text has
    an escape or a byte outside printable ASCII, or no closing quote."""
    while i < end:
        c = p[i]
        if c == _QUOTE:
            return i
        if c < 32 or c > 126 or c == _BACKSLASH:
            return -1
        i += 1
    return -1


@njit(cache=True)
def _literal(p, i, end, word):
    """True when ``p[i:end]`` starts with the bytes of ``word`` (a uint8 array)."""
    n = word.shape[0]
    if end - i < n:
        return False
    j = 0
    while j < n and p[i + j] == word[j]:
        j += 1
    return j == n


@njit(cache=True)
def _lookup(p, s, e, names, width, lens, count):
    """Index of the name equal to ``p[s:e]`` among ``count`` names (``names`` rows of ``width``
    bytes, ``lens`` their lengths), -1 when none."""
    n = e - s
    for k in range(count):
        if lens[k] == n:
            j = 0
            while j < n and names[k * width + j] == p[s + j]:
                j += 1
            if j == n:
                return k
    return -1


@njit(cache=True, inline="always")
def _uint(p, i, end):
    """``(index after it, value)`` of a JSON int of 1 to 18 digits at ``i``; ``(-1, 0)`` else."""
    j = i
    v = 0
    while j < end and 48 <= p[j] <= 57:
        v = v * 10 + (p[j] - 48)
        j += 1
        if j - i > _MAX_DIGITS:
            return -1, 0
    if j == i or (p[i] == 48 and j - i > 1):
        return -1, 0
    return j, v


@njit(cache=True, inline="always")
def _mantissa(p, j, end, m, exact):
    """Fold the digits from ``j`` into the integer mantissa ``m`` while it stays exact;
    ``(index after them, m, exact)``."""
    while j < end and 48 <= p[j] <= 57:
        if exact:
            m = m * 10 + (p[j] - 48)
            exact = m < _EXACT
        j += 1
    return j, m, exact


@njit(cache=True, inline="always")
def _decimal(p, i, end):
    """``(index after the closing quote, value, exact)`` of a decimal string (``[0-9]{1,20}``,
    optionally ``.`` and ``[0-9]{1,20}``) whose text starts at ``i``; ``(-1, 0.0, False)`` when
    it is not one. ``exact`` False: the value needs ``float(text)`` (more digits than the exact
    fast path takes)."""
    j, m, exact = _mantissa(p, i, end, 0, True)
    n_int = j - i
    k = 0
    if j < end and p[j] == _DOT:
        s = j + 1
        j, m, exact = _mantissa(p, s, end, m, exact)
        k = j - s
        if k == 0 or k > 20:
            return -1, 0.0, False
    if n_int == 0 or n_int > 20 or j >= end or p[j] != _QUOTE:
        return -1, 0.0, False
    if not exact or k > 22:
        return j + 1, 0.0, False
    return j + 1, m / _POW10[k], True


@njit(cache=True)
def _digits(p, i, end):
    """Index after a run of at least one digit at ``i``; -1 when there is none."""
    j = i
    while j < end and 48 <= p[j] <= 57:
        j += 1
    return j if j > i else -1


@njit(cache=True)
def _skip_scalar(p, i, end):
    """Index after a JSON string (as ``_string_end`` takes them), number, true, false or null
    at ``i`` (< end); -1 for anything else (arrays and objects included)."""
    c = p[i]
    if c == _QUOTE:
        j = _string_end(p, i + 1, end)
        return j + 1 if j >= 0 else -1
    for word in (_TRUE, _FALSE, _NULL):
        if _literal(p, i, end, word):
            return i + word.shape[0]
    j = i + 1 if c == _MINUS else i
    if j < end and p[j] == 48:
        j += 1
    else:
        j = _digits(p, j, end)
        if j < 0:
            return -1
    if j < end and p[j] == _DOT:
        j = _digits(p, j + 1, end)
        if j < 0:
            return -1
    if j < end and (p[j] == 101 or p[j] == 69):  # e E
        j += 1
        if j < end and (p[j] == _PLUS or p[j] == _MINUS):
            j += 1
        j = _digits(p, j, end)
    return j


@njit(cache=True, inline="always")
def _member(p, i, end):
    """A member ``"key" : value`` at ``i``: ``(key start, key end, index of the value)``;
    value index -1 when the key cannot be vouched or no value follows."""
    if i >= end or p[i] != _QUOTE:
        return 0, 0, -1
    ke = _string_end(p, i + 1, end)
    if ke < 0:
        return 0, 0, -1
    j = _ws(p, ke + 1, end)
    if j >= end or p[j] != _COLON:
        return 0, 0, -1
    j = _ws(p, j + 1, end)
    return i + 1, ke, j if j < end else -1


@njit(cache=True, inline="always")
def _next(p, i, end):
    """After a member's value: ``(index of the next member, False)`` after a comma, ``(index
    after the "}", True)`` at the end of the object, ``(-1, False)`` else."""
    i = _ws(p, i, end)
    if i < end and p[i] == _COMMA:
        return _ws(p, i + 1, end), False
    if i < end and p[i] == _RBRACE:
        return i + 1, True
    return -1, False


@njit(cache=True)
def _payload(p, i, end):
    """The aggTrade object at ``i`` (< end, its ``{``): ``(index after its "}", (T, a, f, l, E,
    price, qty, maker, price start, price end, qty start, qty end, symbol start, symbol
    end))``, starts and ends of texts; price/qty -1.0 when they need ``float(text)``. Index -1
    when the object cannot be vouched."""
    t = a = f = l = e = 0  # noqa: E741
    price = qty = 0.0
    maker = False
    ps = pe = qs = qe = ss = se = 0
    seen = 0
    done = False
    i = _ws(p, i + 1, end) if p[i] == _LBRACE else -1
    while i >= 0 and not done:
        ks, ke, i = _member(p, i, end)
        if i < 0:
            break
        key = p[ks] if ke - ks == 1 else 0
        bit = _KEY_BIT[key]
        if seen & bit:
            i = -1
            break
        seen |= bit
        c = p[i]
        if key == 84 or key == 97 or key == 102 or key == 108 or key == 69:  # T a f l E
            i, v = _uint(p, i, end)
            if key == 84:
                t = v
            elif key == 97:
                a = v
            elif key == 102:
                f = v
            elif key == 108:
                l = v  # noqa: E741
            else:
                e = v
        elif key == 112 or key == 113:  # p q
            j, v, exact = _decimal(p, i + 1, end) if c == _QUOTE else (-1, 0.0, False)
            if key == 112:
                price, ps, pe = (v if exact else -1.0), i + 1, j - 1
            else:
                qty, qs, qe = (v if exact else -1.0), i + 1, j - 1
            i = j
        elif key == 109:  # m
            maker = c == 116
            word = _TRUE if maker else _FALSE
            i = i + word.shape[0] if _literal(p, i, end, word) else -1
        elif key == 115 or key == 101:  # s e
            j = _string_end(p, i + 1, end) if c == _QUOTE else -1
            if key == 115:
                ss, se = i + 1, j
            elif j - i - 1 != _AGG_TRADE.shape[0] or not _literal(p, i + 1, end, _AGG_TRADE):
                j = -1
            i = j + 1 if j >= 0 else -1
        else:
            i = _skip_scalar(p, i, end)
        if i >= 0:
            i, done = _next(p, i, end)
    if seen != _ALL_KEYS:
        i = -1
    return i, (t, a, f, l, e, price, qty, maker, ps, pe, qs, qe, ss, se)


@njit(cache=True)
def _envelope(p, i, end):
    """The combined envelope at ``i`` (< end, its ``{``): ``(index after its "}", stream
    start, stream end, payload)``, payload as ``_payload`` gives it. Index -1 when the
    envelope cannot be vouched."""
    stream_start = stream_end = 0
    j = -1
    payload = (0, 0, 0, 0, 0, 0.0, 0.0, False, 0, 0, 0, 0, 0, 0)
    seen = 0
    done = False
    i = _ws(p, i + 1, end) if p[i] == _LBRACE else -1
    while i >= 0 and not done:
        ks, ke, i = _member(p, i, end)
        if i < 0:
            break
        if ke - ks == 6 and _literal(p, ks, end, _STREAM):
            bit = _K_STREAM
        elif ke - ks == 4 and _literal(p, ks, end, _DATA):
            bit = _K_DATA
        else:
            bit = 0
        if seen & bit:
            i = -1
            break
        seen |= bit
        if bit == _K_STREAM:
            j = _string_end(p, i + 1, end) if p[i] == _QUOTE else -1
            stream_start, stream_end = i + 1, j
            i = j + 1 if j >= 0 else -1
        elif bit == _K_DATA:
            i, payload = _payload(p, i, end)
        else:
            i = _skip_scalar(p, i, end)
        if i >= 0:
            i, done = _next(p, i, end)
    if seen != _K_STREAM | _K_DATA:
        i = -1
    return i, stream_start, stream_end, payload


@njit(cache=True, inline="always")
def _nul(p, i, size):
    """Index of the first NUL byte at or after ``i`` (``size`` when none)."""
    while i < size and p[i] != 0:
        i += 1
    return i


@njit(cache=True)
def _parse(buf, ticks, event_ms, spans, symbol, vouched, symbols, symbol_lens, streams,
           stream_lens, stream_seen):  # fmt: skip
    """Parse the frames of ``buf`` (joined by NUL bytes), frame ``row`` into row ``row``;
    ``vouched[row]`` True when it is certainly what msgspec's strict ``binance.CombinedFrame``
    decode makes of it, an aggTrade (the oracle of tests/engine/test_aggparse.py). Price or
    qty -1.0 where the text at ``spans`` (price start, end, qty start, end) needs
    ``float(text)``. ``stream_seen`` counts vouched frames per stream of the table.

    Returns ``(frames found, rows with such a decimal)``; the rows hold the first frames
    when more frames are found than rows. No parse goes past a NUL byte (it is not JSON
    anywhere), so a frame never reads into the next one."""
    p, size = _address(buf), buf.shape[0]
    sym_p, sym_w, sym_n = _address(symbols), symbols.shape[1], symbols.shape[0]
    str_p, str_w, str_n = _address(streams), streams.shape[1], streams.shape[0]
    sym_lens, str_lens = _address(symbol_lens), _address(stream_lens)
    start = row = n_slow = 0
    while start <= size:
        i = _ws(p, start, size)
        ok = False
        if row < vouched.shape[0] and i < size:
            i, s, e, d = _envelope(p, i, size)
            stream = _lookup(p, s, e, str_p, str_w, str_lens, str_n) if i >= 0 else -1
            if stream >= 0:
                i = _ws(p, i, size)
                ok = i == size or p[i] == 0
            if ok:
                stream_seen[stream] += 1
                t = ticks[row]
                t.ts, t.agg_id, t.first_id, t.last_id = d[0], d[1], d[2], d[3]
                t.price, t.qty, t.buyer_maker = d[5], d[6], d[7]
                event_ms[row] = d[4]
                spans[row, 0], spans[row, 1], spans[row, 2], spans[row, 3] = d[8:12]
                symbol[row] = _lookup(p, d[12], d[13], sym_p, sym_w, sym_lens, sym_n)
                n_slow += d[5] < 0.0 or d[6] < 0.0
        if row < vouched.shape[0]:
            vouched[row] = ok
        start = (i if ok else _nul(p, start, size)) + 1
        row += 1
    return row, n_slow


# -- wrapper ---------------------------------------------------------------------------------


def parse_agg_trades(buf: bytes, n: int, symbols: NameTable,
                     streams: NameTable) -> AggColumns | None:  # fmt: skip
    """Columns of ``n`` frames joined by NUL bytes in ``buf`` (``b"\\0".join(frames)``);
    None when ``buf`` does not split there into exactly ``n`` frames (some frame holds a NUL
    byte: not JSON, so not an aggTrade either). ``symbols`` the symbols' table
    (``AggColumns.symbol`` indexes it), ``streams`` the stream names a vouched frame may carry.
    ValueError for bad arguments."""
    data = np.frombuffer(buf, dtype=np.uint8)
    if not isinstance(n, int) or n < 0 or (n == 0 and len(data)):
        raise ValueError(f"n must be the number of frames (an int >= 0), got {n!r}")
    if not (isinstance(symbols, NameTable) and isinstance(streams, NameTable)):
        raise ValueError("symbols and streams must be NameTable (see name_table)")
    ticks = np.empty(n, dtype=TICK_DTYPE)
    event_ms = np.empty(n, dtype=np.int64)
    spans = np.empty((n, 4), dtype=np.int64)
    symbol = np.empty(n, dtype=np.int64)
    vouched = np.empty(n, dtype=np.bool_)
    stream_seen = np.zeros(len(streams.names), dtype=np.int64)
    if n:
        found, n_slow = _parse(data, ticks, event_ms, spans, symbol, vouched, symbols.data,
                               symbols.lens, streams.data, streams.lens, stream_seen)  # fmt: skip
        if found != n:
            return None
        if n_slow:  # rare: more significant digits than the exact fast path takes
            price, qty = ticks["price"], ticks["qty"]
            for row in np.flatnonzero(vouched & ((price < 0.0) | (qty < 0.0))).tolist():
                for col, values in ((0, price), (2, qty)):
                    if values[row] < 0.0:
                        text = data[spans[row, col] : spans[row, col + 1]].tobytes()
                        values[row] = float(text)
    return AggColumns(ticks, event_ms, symbol, vouched, stream_seen)


_kernel_loaded = False


def load_kernel() -> None:
    """Load (or compile) the kernel with the types ``parse_agg_trades`` calls it with, so that
    the first batch of frames is not delayed by it (about 0.3 s in a fresh process; compiling
    when numba's cache is cold takes seconds). Later calls do nothing."""
    global _kernel_loaded
    if not _kernel_loaded:
        table = name_table(["A"])
        parse_agg_trades(b"{}", 1, table, table)
        _kernel_loaded = True
