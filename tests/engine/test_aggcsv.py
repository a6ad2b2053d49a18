"""engine.aggcsv against its oracles: a plain-Python parse of the CSV text (``int``, ``float``)
for every file it vouches for, and the reference import path (pyarrow's reader and the
importer's checks) giving the very same store."""

from __future__ import annotations

import io

import numpy as np
import pytest

from engine import importer
from engine.aggcsv import NotVouched, agg_trade_blocks, load_kernel
from engine.importer import import_files
from engine.schemas import TICK_DTYPE
from engine.store import Store

DAY0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
MIN_MS, MAX_MS = 946_684_800_000, 4_102_444_800_000
HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"


def _lines(n: int, seed: int) -> list[str]:
    """Binance-like rows: growing ids and times, prices and sizes of varied decimals."""
    rng = np.random.default_rng(seed)
    ids = 10**6 + np.cumsum(rng.integers(1, 3, n))
    ts = DAY0 + np.cumsum(rng.integers(0, 40, n))
    first = ids * 3
    last = first + rng.integers(0, 4, n)
    decimals = rng.integers(0, 9, n)
    lines = []
    for k in range(n):
        price = f"{60_000 + rng.normal(0, 500):.{decimals[k]}f}"
        qty = f"{rng.exponential(2.0) + 0.001:.{(decimals[k] + 3) % 9}f}"
        qty = "1" if float(qty) == 0 else qty
        maker = "true" if rng.random() < 0.5 else "false"
        lines.append(f"{ids[k]},{price},{qty},{first[k]},{last[k]},{ts[k]},{maker}")
    return lines


def _oracle(lines: list[str]) -> np.ndarray:
    out = np.empty(len(lines), dtype=TICK_DTYPE)
    for k, line in enumerate(lines):  # plain-Python parse
        a, p, q, f, last, t, m = line.split(",")
        out[k] = (int(t), int(a), float(p), float(q), int(f), int(last), m == "true")
    return out


def _parse(text: bytes, *, header: bool, block: int) -> np.ndarray:
    blocks = list(agg_trade_blocks(io.BytesIO(text), header=header, block_bytes=block,
                                   min_ms=MIN_MS, max_ms=MAX_MS))  # fmt: skip
    out = np.empty(sum(len(b["ts"]) for b in blocks), dtype=TICK_DTYPE)
    for name in TICK_DTYPE.names:
        assert all(b[name].dtype == TICK_DTYPE[name] and len(b[name]) for b in blocks)
        out[name] = np.concatenate([b[name] for b in blocks]) if blocks else []
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("end", ["\n", "\r\n"])
@pytest.mark.parametrize("block", [200, 4096, 1 << 20])
@pytest.mark.parametrize("final_newline", [True, False])
def test_vouched_rows_equal_the_plain_python_parse(seed, header, end, block, final_newline):
    lines = _lines(700, seed)
    text = end.join(([HEADER] if header else []) + lines) + (end if final_newline else "")
    got = _parse(text.encode(), header=header, block=block)
    expected = _oracle(lines)
    assert len(got) == len(expected)
    for name in TICK_DTYPE.names:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.mark.parametrize("price", ["60097.600000000006", "0.1234567890123456789012",
                                   "123456789012345678.5", "9007199254740993",
                                   "2.2250738585072011", "1.00000000000000011102230246251565404",
                                   "0.000000000000000000000000000000000000001"])
def test_long_decimals_equal_python_float(price):
    line = f"1000,{price},{price},100,105,1717200000000,false"
    got = _parse((line + "\n").encode(), header=False, block=4096)
    np.testing.assert_array_equal(got, _oracle([line]))
    assert got["price"][0] == float(price)


@pytest.mark.parametrize("block", [200, 4096])
def test_rows_after_a_long_decimal_are_parsed_and_checked_as_before(block):
    """A long decimal switches the rest of its block to the strtod loop: the rows around it
    stay exact, and a bad row after it is still refused."""
    lines = _lines(300, 5)
    for k in (100, 101, 250):
        a, _, *rest = lines[k].split(",")
        lines[k] = ",".join([a, "60097.600000000006", *rest])
    text = "\n".join(lines) + "\n"
    got = _parse(text.encode(), header=False, block=block)
    np.testing.assert_array_equal(got, _oracle(lines))
    lines[260] = lines[260].replace(",", ", ", 1)
    with pytest.raises(NotVouched):
        _parse(("\n".join(lines) + "\n").encode(), header=False, block=block)


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("block", [200, 4096, 1 << 20])
@pytest.mark.parametrize("final_newline", [True, False])
def test_a_file_on_disk_is_mapped_and_parsed_as_a_stream_is(tmp_path, header, block,
                                                            final_newline):  # fmt: skip
    """Files are mapped, not read (``_mapped_windows``): the same rows from the stream's
    position, a last line without a line end, an empty file, a line longer than a block."""
    lines = _lines(500, 7)
    text = ("\n".join(([HEADER] if header else []) + lines) + ("\n" if final_newline else ""))
    path = tmp_path / "t.csv"
    path.write_bytes(b"junk before\n" + text.encode())
    with path.open("rb") as stream:
        stream.seek(len(b"junk before\n"))
        blocks = list(agg_trade_blocks(stream, header=header, block_bytes=block, min_ms=MIN_MS,
                                       max_ms=MAX_MS))  # fmt: skip
    got = np.concatenate([np.rec.fromarrays(list(b.values()), dtype=TICK_DTYPE) for b in blocks])
    np.testing.assert_array_equal(got, _oracle(lines))
    np.testing.assert_array_equal(got, _parse(text.encode(), header=header, block=block))
    path.write_bytes(b"")
    with path.open("rb") as stream:
        assert list(agg_trade_blocks(stream, header=False, block_bytes=block, min_ms=MIN_MS,
                                     max_ms=MAX_MS)) == []  # fmt: skip
    path.write_bytes((GOOD + "\n").encode() * 3)
    with path.open("rb") as stream, pytest.raises(NotVouched):
        list(agg_trade_blocks(stream, header=False, block_bytes=20, min_ms=MIN_MS,
                              max_ms=MAX_MS))  # fmt: skip


def test_empty_and_header_only_files_give_no_rows():
    assert len(_parse(b"", header=False, block=4096)) == 0
    assert len(_parse((HEADER + "\n").encode(), header=True, block=4096)) == 0


GOOD = "1000,97012.40,0.013,100,105,1717200000000,true"


@pytest.mark.parametrize("line", [
    "1000,97012.40,0.013,100,105,1717200000000,True",  # the reference takes other cases
    "1000,97012.40,0.013,100,105,1717200000000123,true",  # microseconds
    "1000,97012.40,0.013,100,105,1717200000,true",  # seconds
    "1000,9.7e4,0.013,100,105,1717200000000,true",  # exponent
    "1000,97012.40,0.0,100,105,1717200000000,true",  # zero quantity
    "1000,0,0.013,100,105,1717200000000,true",  # zero price
    "1000,.5,0.013,100,105,1717200000000,true",
    "1000,5.,0.013,100,105,1717200000000,true",
    "1000,-1.5,0.013,100,105,1717200000000,true",
    "-1000,97012.40,0.013,100,105,1717200000000,true",
    "1000,97012.40,0.013,100,99,1717200000000,true",  # last id below first id
    "1000,97012.40,0.013,100,105,1717200000000,true,1",  # extra field
    "1000,97012.40,0.013,100,105,1717200000000",  # missing field
    "1000, 97012.40,0.013,100,105,1717200000000,true",
    "1000,97012.40,0.013,100,105,1717200000000,tru",
    "1000,97012.40,0.013,100,105,1717200000000,truex",
    "1000000000000000000,97012.40,0.013,100,105,1717200000000,true",  # 19 digits
    "1000,0.12345678901234567890123456789012345678901,0.013,100,105,1717200000000,true",
    "1000,97012.40,0.000000000000000000000,100,105,1717200000000,true",  # zero, long
    "1000,97012.40,0.013,100,105,1717199999999,true",  # time before the previous row's
    "998,97012.40,0.013,100,105,1717200000000,true",  # id not above the previous row's
    "",  # empty line
])
def test_rows_it_cannot_vouch_for_are_refused(line):
    text = f"{GOOD.replace('1000,', '998,', 1)}\n{line}\n{GOOD.replace('1000,', '1001,', 1)}\n"
    with pytest.raises(NotVouched):
        _parse(text.encode(), header=False, block=4096)


def test_a_line_longer_than_a_block_is_refused():
    with pytest.raises(NotVouched):
        _parse((GOOD + "\n").encode() * 3, header=False, block=20)


def _import(tmp_path, name: str, lines: list[str], *, fast: bool, monkeypatch) -> Store:
    path = tmp_path / f"{name}.csv"
    path.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    if not fast:
        def refuse(*args, **kwargs):
            raise NotVouched("forced")
            yield

        monkeypatch.setattr(importer, "agg_trade_blocks", refuse)
    monkeypatch.setattr(importer, "BLOCK_BYTES", 8192)
    store = Store(tmp_path / ("fast" if fast else "reference"))
    import_files([path], store)
    return Store(store.path)


def test_fast_path_stores_what_the_reference_path_stores(tmp_path, monkeypatch):
    lines = _lines(5000, 7)
    fast = _import(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines, fast=True,
                   monkeypatch=monkeypatch)
    reference = _import(tmp_path, "BTCUSDT-aggTrades-2024-06-01", lines, fast=False,
                        monkeypatch=monkeypatch)
    assert fast.read_ticks("BTCUSDT").equals(reference.read_ticks("BTCUSDT"))
    assert fast.read_ticks("BTCUSDT").num_rows == len(lines)
    for tf in ("1s", "1m", "5m"):
        assert fast.read_bars(tf, "BTCUSDT").equals(reference.read_bars(tf, "BTCUSDT"))


def test_load_kernel_is_idempotent_and_leaves_parsing_unchanged():
    load_kernel()
    load_kernel()
    got = _parse((GOOD + "\n").encode(), header=False, block=4096)
    np.testing.assert_array_equal(got, _oracle([GOOD]))
