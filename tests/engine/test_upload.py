"""engine.upload: OHLC CSV parsing checked against pandas, every refusal with line and column."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from engine.errors import DataError, UploadError
from engine.schemas import BAR_DTYPE
from engine.upload import parse_ohlc_csv, parse_uploads, symbol_from_filename
from tests.kit import cointegrated_pair

T0 = 1_700_000_000_000


def _frame(n: int, seed: int, symbol: str | None = None, step_ms: int = 1_000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close, _ = cointegrated_pair(n, seed=seed)
    open_ = close * np.exp(rng.normal(0, 1e-3, n))
    high = np.maximum(open_, close) * (1 + rng.random(n) * 1e-3)
    low = np.minimum(open_, close) * (1 - rng.random(n) * 1e-3)
    df = pd.DataFrame(
        {
            "ts": T0 + step_ms * np.arange(n, dtype=np.int64),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.random(n) * 10,
        }
    )
    if symbol is not None:
        df.insert(0, "symbol", symbol)
    return df


def _csv(df: pd.DataFrame, **kw) -> bytes:
    return df.to_csv(index=False, float_format="%.17g", **kw).encode()


def _check_against(df: pd.DataFrame, bars: np.ndarray) -> None:
    assert bars.dtype == BAR_DTYPE
    np.testing.assert_array_equal(bars["ts"], df["ts"].to_numpy(np.int64))
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(bars[col], df[col].to_numpy(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("n", [1, 7, 500])
@pytest.mark.parametrize("ts_form", ["ms", "iso", "iso_offset"])
@pytest.mark.parametrize("shuffle_columns", [False, True])
def test_one_symbol_file_matches_pandas(n, ts_form, shuffle_columns):
    df = _frame(n, seed=n)
    out = df.copy()
    if ts_form == "iso":
        out["ts"] = pd.to_datetime(df["ts"], unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    elif ts_form == "iso_offset":
        out["ts"] = (
            pd.to_datetime(df["ts"], unit="ms", utc=True)
            .dt.tz_convert("Asia/Tokyo")
            .map(lambda t: t.isoformat())
        )
    if shuffle_columns:
        out = out[["close", "ts", "volume", "low", "open", "high"]]
    parsed = parse_ohlc_csv(_csv(out), filename="ethusdt-1s-2024.csv")
    assert list(parsed) == ["ETHUSDT"]
    # the oracle: pandas' own reading of the same bytes
    oracle = pd.read_csv(io.BytesIO(_csv(out)))
    oracle["ts"] = df["ts"]
    _check_against(oracle, parsed["ETHUSDT"])
    assert np.isnan(parsed["ETHUSDT"]["quote_volume"]).all()
    assert (parsed["ETHUSDT"]["trades"] == 0).all()


@pytest.mark.parametrize("symbols", [["ETHUSDT", "BTCUSDT"], ["A1USDT", "B2USDT", "C3USDT"]])
def test_symbol_column_splits_per_symbol(symbols):
    frames = [_frame(50, seed=i, symbol=s) for i, s in enumerate(symbols)]
    mixed = pd.concat(frames).sort_values(["ts", "symbol"], kind="stable")
    mixed["quote_volume"] = mixed["close"] * mixed["volume"]
    mixed["trades"] = np.arange(len(mixed)) % 7
    parsed = parse_ohlc_csv(_csv(mixed), filename="whatever.csv")
    assert sorted(parsed) == sorted(symbols)
    for s, f in zip(symbols, frames, strict=True):
        _check_against(f, parsed[s])
        sub = mixed[mixed["symbol"] == s]
        np.testing.assert_allclose(parsed[s]["quote_volume"], sub["quote_volume"], rtol=1e-15)
        np.testing.assert_array_equal(parsed[s]["trades"], sub["trades"])


def test_one_file_per_leg_and_symbol_override():
    y, x = _frame(30, 1), _frame(30, 2)
    parsed = parse_uploads({"ETHUSDT.csv": _csv(y), "BTCUSDT_1s.csv": _csv(x)})
    _check_against(y, parsed["ETHUSDT"])
    _check_against(x, parsed["BTCUSDT"])
    assert list(parse_ohlc_csv(_csv(y), filename="data.csv", symbol="SOLUSDT")) == ["SOLUSDT"]


def test_bom_blank_lines_and_header_case():
    df = _frame(5, 3)
    text = _csv(df).decode().replace("ts,open", "TS,Open")
    text = text.replace("\n", "\n\n", 2)
    parsed = parse_ohlc_csv(b"\xef\xbb\xbf" + text.encode(), filename="ETHUSDT.csv")
    _check_against(df, parsed["ETHUSDT"])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ETHUSDT.csv", "ETHUSDT"),
        ("btcusdt-1m-2024-06-01.csv", "BTCUSDT"),
        ("/tmp/x/SOLUSDT_bars.csv", "SOLUSDT"),
        ("my data.csv", None),
        ("-.csv", None),
    ],
)
def test_symbol_from_filename(name, expected):
    assert symbol_from_filename(name) == expected


def _lines(df: pd.DataFrame) -> list[str]:
    return _csv(df).decode().splitlines()


BAD_CASES = [
    # (description, mutate(lines) -> lines, line, column)
    ("empty", lambda ls: [], 1, None),
    ("missing column", lambda ls: [ls[0].replace(",volume", "")] + [
        r.rsplit(",", 1)[0] for r in ls[1:]
    ], 1, "volume"),
    ("unknown column", lambda ls: [ls[0] + ",colour"] + [r + ",red" for r in ls[1:]], 1, "colour"),
    ("duplicate column", lambda ls: [ls[0] + ",open"] + [r + ",1" for r in ls[1:]], 1, "open"),
    ("header only", lambda ls: ls[:1], 2, None),
    ("short row", lambda ls: [*ls[:3], ls[3].rsplit(",", 1)[0], *ls[4:]], 4, None),
    ("bad ts", lambda ls: [*ls[:2], "yesterday" + ls[2][13:], *ls[3:]], 3, "ts"),
    ("bad number", lambda ls: _set(ls, 5, 4, "abc"), 5, "close"),
    ("nan price", lambda ls: _set(ls, 3, 1, "nan"), 3, "open"),
    ("inf volume", lambda ls: _set(ls, 6, 5, "inf"), 6, "volume"),
    ("negative volume", lambda ls: _set(ls, 4, 5, "-1"), 4, "volume"),
    ("zero price", lambda ls: _set(ls, 2, 3, "0"), 2, "low"),
    ("low above close", lambda ls: _set(ls, 7, 3, "1e9"), 7, "low"),
    ("high below open", lambda ls: _set(ls, 3, 2, "1e-9"), 3, "high"),
    ("time goes back", lambda ls: [*ls[:4], ls[2], *ls[5:]], 5, "ts"),
    ("duplicate time", lambda ls: [*ls[:4], ls[3], *ls[4:]], 5, "ts"),
]


def _set(lines: list[str], line: int, field: int, value: str) -> list[str]:
    out = list(lines)
    cells = out[line - 1].split(",")
    cells[field] = value
    out[line - 1] = ",".join(cells)
    return out


@pytest.mark.parametrize(
    ("what", "mutate", "line", "column"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_bad_file_names_line_and_column(what, mutate, line, column):
    data = "\n".join(mutate(_lines(_frame(10, 4)))).encode()
    with pytest.raises(UploadError) as info:
        parse_ohlc_csv(data, filename="ETHUSDT.csv")
    err = info.value
    assert isinstance(err, DataError)
    assert (err.line, err.column) == (line, column), str(err)
    assert "ETHUSDT.csv" in str(err) and f"line {line}" in str(err)
    if column:
        assert repr(column) in str(err)


def test_bad_trades_and_symbol_values():
    df = _frame(4, 5, symbol="ETHUSDT")
    df["trades"] = [1, 2, -3, 4]
    with pytest.raises(UploadError, match=r"line 4, column 'trades'"):
        parse_ohlc_csv(_csv(df))
    df["trades"] = 1
    df.loc[1, "symbol"] = "eth usdt!"
    with pytest.raises(UploadError, match=r"line 3, column 'symbol'") as info:
        parse_ohlc_csv(_csv(df))
    assert (info.value.line, info.value.column) == (3, "symbol")


def test_no_symbol_anywhere_is_refused():
    with pytest.raises(UploadError, match="no symbol column") as info:
        parse_ohlc_csv(_csv(_frame(3, 6)), filename="my data.csv")
    assert (info.value.line, info.value.column) == (1, "symbol")


def test_not_utf8_names_the_line():
    lines = _csv(_frame(5, 7)).split(b"\n")
    lines[3] = b"\xff\xfe" + lines[3]
    data = b"\n".join(lines)
    with pytest.raises(UploadError, match="not UTF-8") as info:
        parse_ohlc_csv(data, filename="ETHUSDT.csv")
    assert info.value.line == 4


@pytest.mark.parametrize("cap", [100, 1_000])
def test_size_cap(cap):
    data = _csv(_frame(200, 8))
    with pytest.raises(UploadError, match=f"over the upload limit of {cap} bytes"):
        parse_ohlc_csv(data, filename="ETHUSDT.csv", max_bytes=cap)
    with pytest.raises(UploadError, match="upload limit"):
        parse_uploads({"ETHUSDT.csv": data}, max_bytes=cap)
    assert parse_ohlc_csv(data, filename="ETHUSDT.csv", max_bytes=len(data))["ETHUSDT"].size == 200


def test_uploads_refuse_a_symbol_twice_and_nothing():
    data = _csv(_frame(5, 9))
    with pytest.raises(UploadError, match=r"also in ETHUSDT\.csv"):
        parse_uploads({"ETHUSDT.csv": data, "ethusdt-copy.csv": data})
    with pytest.raises(UploadError, match="no file given"):
        parse_uploads({})


@pytest.mark.parametrize("scale", [1, 1000])
def test_unix_seconds_are_refused_never_read_as_1970(scale):
    """Integer times below 1e11 (ms before 1973) are Unix seconds: refused at the first such row
    with its line, column 'ts' and the ms to give instead; the same times in ms are read."""
    df = _frame(5, 7, step_ms=60_000)
    df["ts"] = (df["ts"] // 1000) * scale
    if scale == 1000:
        assert parse_ohlc_csv(_csv(df), filename="ETHUSDT.csv")["ETHUSDT"]["ts"].tolist() == (
            df["ts"].tolist()
        )
        return
    with pytest.raises(UploadError, match=r"line 2, column 'ts'.*Unix seconds") as info:
        parse_ohlc_csv(_csv(df), filename="ETHUSDT.csv")
    assert (info.value.line, info.value.column) == (2, "ts")
    assert str(int(df["ts"][0]) * 1000) in str(info.value)
