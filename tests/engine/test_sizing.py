"""``auto`` sizing: few large actors on few cores, more on many, Binance's stream cap kept."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.binance import WS_MAX_STREAMS
from engine.sizing import Sizing, size_engine


@pytest.mark.parametrize(
    ("pairs", "symbols", "cpus", "expected", "actors"),
    [
        (1000, 100, 2, Sizing(1000, 100), (1, 1)),  # the benchmark case: one of each
        (1000, 100, 16, Sizing(125, 50), (8, 2)),
        (1000, 100, 64, Sizing(100, 50), (10, 2)),  # no actor below 100 pairs / 50 symbols
        (6, 4, 64, Sizing(6, 4), (1, 1)),
        (124_750, 500, 2, Sizing(124_750, 500), (1, 1)),
        (10, 600, 2, Sizing(10, 300), (1, 2)),  # 2 streams a symbol: at most 512 on one
    ],
)
def test_auto_sizes(pairs, symbols, cpus, expected, actors):
    got = size_engine(pairs, symbols, cpus)
    assert got == expected
    assert got.actors(pairs, symbols) == actors


def test_numbers_from_the_config_are_kept():
    got = size_engine(1000, 100, 2, pairs_per_actor=25, symbols_per_connection=50)
    assert got == Sizing(25, 50) and got.actors(1000, 100) == (40, 2)


def test_one_stream_per_symbol_allows_full_connections():
    assert size_engine(10, 1024, 2, streams_per_symbol=1).symbols_per_connection == 1024
    assert size_engine(10, 1025, 2, streams_per_symbol=1).actors(10, 1025)[1] == 2


@given(
    pairs=st.integers(0, 200_000),
    symbols=st.integers(0, 3_000),
    cpus=st.integers(1, 256),
    streams=st.integers(1, 3),
)
def test_sizes_place_everything_within_the_limits(pairs, symbols, cpus, streams):
    got = size_engine(pairs, symbols, cpus, streams_per_symbol=streams)
    n_actors, n_conns = got.actors(pairs, symbols)
    assert got.pairs_per_actor >= 1 and got.symbols_per_connection >= 1
    assert n_actors * got.pairs_per_actor >= pairs
    assert n_actors <= max(1, cpus // 2)
    assert got.symbols_per_connection * streams <= WS_MAX_STREAMS
    assert n_conns <= max(1, cpus // 4, math.ceil(symbols / (WS_MAX_STREAMS // streams)))


@pytest.mark.parametrize("bad", [(-1, 1, 2), (1, -1, 2), (1, 1, 0)])
def test_bad_input_is_refused(bad):
    with pytest.raises(ValueError, match="size_engine"):
        size_engine(*bad)
