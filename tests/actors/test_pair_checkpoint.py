"""PairActor checkpoints: a restart from a checkpoint plus the bars after it equals a full
replay exactly; a checkpoint of another config, version or format (or an unreadable one) is
ignored, and a pickle planted under the store is never executed."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from actors.pair import PairActor
from engine import checkpoint as ckpt
from engine.checkpoint import checkpoint_path, config_fingerprint, read_checkpoint
from engine.config import parse_config
from engine.errors import ConfigError
from engine.pairbook import PairBook, parse_pair
from engine.store import Store
from tests.engine.test_pairbook import PAIRS, SYMS, batch_oracle, deliver, legs, new_book

LAG = {"ETHUSDT": 0, "BTCUSDT": 900, "SOLUSDT": 2500}


def config(store, hedge="kalman", zscore="rolling", zscore_window=15, strategy="zscore"):
    extra = {"max_hold_half_lives": 2.0} if strategy == "zscore_timestop" else {}
    return parse_config(
        {
            "feed": {"source": "simulator", "lateness_ms": 250},
            "symbols": SYMS,
            "pairs": [{"y": p.split("/")[0], "x": p.split("/")[1]} for p in PAIRS],
            "analytics": {"hedge": hedge, "zscore": zscore, "ols_window": 20,
                          "zscore_window": zscore_window},
            "strategy": {"name": strategy, "entry": 1.0, "exit": 0.0, "stop": 3.0, **extra},
            "alerts": [{"pair": PAIRS[0], "abs_above": 1.0}],
            "store": {"path": str(store)},
        }
    )  # fmt: skip


def assert_same(a: PairBook, b: PairBook):
    for pair in PAIRS:
        sa, sb = a.snapshot(pair), b.snapshot(pair)
        for key in sa:
            np.testing.assert_array_equal(sa[key], sb[key], err_msg=f"{pair} {key}")
    np.testing.assert_equal(a.rows(), b.rows())  # NaN z/beta compare equal here
    assert a.alerts.armed == b.alerts.armed


@pytest.mark.parametrize(
    ("hedge", "zscore", "strategy"),
    [
        ("kalman", "rolling", "zscore"),
        ("kalman", "innovation", "zscore_timestop"),
        ("rolling_ols", "rolling", "zscore"),
        ("static_ols", "rolling", "zscore_timestop"),
    ],
)
@pytest.mark.parametrize("cut", [0.1, 0.55, 0.9])
def test_book_restored_from_a_checkpoint_equals_one_fed_everything(tmp_path, hedge, zscore,
                                                                   strategy, cut):  # fmt: skip
    cfg = config(tmp_path, hedge, zscore, strategy=strategy)
    bars = legs(7)
    t0 = min(int(b["ts"][0]) for b in bars.values())
    t1 = max(int(b["ts"][-1]) for b in bars.values()) + 4000
    cuts = np.arange(t0, t1, 430)
    k = int(len(cuts) * cut)
    whole, first = new_book(cfg, PAIRS), new_book(cfg, PAIRS)
    for book in (whole, first):
        book.alerts.set_rules(whole.alerts.rules.values() if book is first else [])
    deliver(whole, bars, cuts, LAG)
    deliver(first, bars, cuts[:k], LAG)
    path = checkpoint_path(str(tmp_path), "book")
    fingerprint = config_fingerprint(cfg.analytics, cfg.strategy, PAIRS)
    ckpt.write_checkpoint(path, fingerprint, first.checkpoint())
    state = read_checkpoint(path, fingerprint)
    again = new_book(cfg, PAIRS)
    again.restore(state)
    # a restarted book gets every bar again (the feeds repeat); consumed ones are skipped
    deliver(again, bars, cuts[k:], LAG)
    assert_same(whole, again)
    for pair in PAIRS:
        y, x = parse_pair(pair)
        al, series, _, pos = batch_oracle(cfg, bars[y], bars[x])
        snap = again.snapshot(pair)
        np.testing.assert_array_equal(snap["ts"], al.ts)
        np.testing.assert_allclose(snap["z"], series.z, rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(snap["position"], pos)


def store_bars(store_path, bars, upto=None):
    store = Store(store_path)
    for sym, b in bars.items():
        store.write_bars("1s", sym, b if upto is None else b[b["ts"] < upto])
    store.flush()


@pytest.mark.parametrize("cut", [0.3, 0.8])
def test_actor_restart_from_checkpoint_equals_full_replay(tmp_path, cut):
    cfg = config(tmp_path)
    bars = legs(3)
    ts = np.sort(np.concatenate([b["ts"] for b in bars.values()]))
    split = int(ts[int(len(ts) * cut)])
    store_bars(tmp_path, bars, upto=split)
    first = PairActor(cfg.to_dict(), PAIRS, name="pairs-0")
    assert not first.restored
    assert first.checkpoint()
    assert checkpoint_path(str(tmp_path), "pairs-0").exists()
    store_bars(tmp_path, {s: b[b["ts"] >= split] for s, b in bars.items()})
    restarted = PairActor(cfg.to_dict(), PAIRS, name="pairs-0")
    assert restarted.restored
    # only the bars after the checkpoint were replayed
    assert min(restarted.book.resume_from().values()) > int(ts[0])
    full = PairActor(cfg, PAIRS)
    assert not full.restored
    assert_same(full.book, restarted.book)
    for pair in PAIRS:
        y, x = parse_pair(pair)
        al, series, _, pos = batch_oracle(cfg, bars[y], bars[x])
        snap = restarted.snapshot(pair)
        # stored bars are final up to each leg's last one
        n = int(np.sum(al.ts <= min(bars[y]["ts"][-1], bars[x]["ts"][-1])))
        np.testing.assert_array_equal(snap["ts"], al.ts[:n])
        np.testing.assert_allclose(snap["z"], series.z[:n], rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(snap["position"], pos[:n])


@pytest.mark.parametrize(
    "change",
    [
        {"zscore_window": 9},
        {"hedge": "rolling_ols"},
        {"strategy": "zscore_timestop"},
    ],
)
def test_checkpoint_of_another_config_is_ignored(tmp_path, change):
    bars = legs(4)
    store_bars(tmp_path, bars)
    assert PairActor(config(tmp_path), PAIRS, name="p").checkpoint()
    other = config(tmp_path, **change)
    actor = PairActor(other, PAIRS, name="p")
    assert not actor.restored
    full = PairActor(other, PAIRS)
    assert_same(full.book, actor.book)


def test_checkpoint_of_other_pairs_or_unreadable_is_ignored(tmp_path):
    bars = legs(5)
    store_bars(tmp_path, bars)
    cfg = config(tmp_path)
    assert PairActor(cfg, PAIRS[:1], name="p").checkpoint()
    assert not PairActor(cfg, PAIRS, name="p").restored
    path = checkpoint_path(str(tmp_path), "p")
    path.write_bytes(b"not a pickle")
    assert not PairActor(cfg, PAIRS, name="p").restored
    path.write_bytes(pickle.dumps({"version": -1}))
    assert not PairActor(cfg, PAIRS, name="p").restored
    # a readable file whose arrays do not fit the book is not restored either
    assert PairActor(cfg, PAIRS, name="p").checkpoint()
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["bank.0"] = arrays["bank.0"][:1]
    np.savez(path, **arrays)
    assert read_checkpoint(path, config_fingerprint(cfg.analytics, cfg.strategy, PAIRS))
    assert not PairActor(cfg, PAIRS, name="p").restored
    # an actor without a name keeps no checkpoint
    assert PairActor(cfg, PAIRS).checkpoint() is False


def test_restore_refuses_a_checkpoint_of_other_pairs(tmp_path):
    cfg = config(tmp_path)
    state = new_book(cfg, PAIRS[:1]).checkpoint()
    with pytest.raises(ConfigError, match="other pairs"):
        new_book(cfg, PAIRS).restore(state)


def test_checkpoint_of_another_layout_version_is_ignored(tmp_path, monkeypatch):
    bars = legs(6)
    store_bars(tmp_path, bars)
    cfg = config(tmp_path)
    monkeypatch.setattr(ckpt, "CHECKPOINT_VERSION", ckpt.CHECKPOINT_VERSION + 1)
    assert PairActor(cfg, PAIRS, name="p").checkpoint()
    monkeypatch.undo()
    fingerprint = config_fingerprint(cfg.analytics, cfg.strategy, PAIRS)
    assert read_checkpoint(checkpoint_path(str(tmp_path), "p"), fingerprint) is None
    actor = PairActor(cfg, PAIRS, name="p")
    assert not actor.restored
    assert_same(PairActor(cfg, PAIRS).book, actor.book)


class _Touch:
    """Unpickling this creates ``marker`` (what a planted pickle could do: run code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("as_name", ["p.pkl", "p.npz"])
def test_a_planted_pickle_is_never_executed(tmp_path, as_name, caplog):
    bars = legs(8)
    store_bars(tmp_path, bars)
    cfg = config(tmp_path)
    marker = tmp_path / "pwned"
    planted = checkpoint_path(str(tmp_path), "p").with_name(as_name)
    planted.parent.mkdir(parents=True)
    planted.write_bytes(pickle.dumps({"version": 1, "fingerprint": "", "state": _Touch(marker)}))
    pickle.loads(planted.read_bytes())["state"].close()  # the payload works: it creates the file
    assert marker.exists()
    os.remove(marker)
    with caplog.at_level("WARNING", logger="engine.checkpoint"):
        actor = PairActor(cfg, PAIRS, name="p")
    assert not marker.exists()
    assert not actor.restored
    assert any(str(planted) in r.getMessage() for r in caplog.records)
    rows = actor.book.rows()
    assert all(r["last_bar"] is not None for r in rows)  # full replay: every pair stepped
    assert_same(PairActor(cfg, PAIRS).book, actor.book)
    # the actor writes its own checkpoint beside it and restores from that next time
    assert actor.checkpoint()
    assert PairActor(cfg, PAIRS, name="p").restored
    assert not marker.exists()


def test_first_start_replays_the_store_from_the_warm_up_window_only(tmp_path):
    """The engine passes each PairActor the start of its warm-up window: a first start steps
    the stored bars from there on (not every bar the store holds), exactly as a book fed only
    those bars; a restart with no checkpoint yet (same argument) does the same."""
    cfg = config(tmp_path)
    bars = legs(8)
    store_bars(tmp_path, bars)
    origin = min(int(b["ts"][len(b) // 2]) for b in bars.values())  # every leg has bars after
    first = PairActor(cfg, PAIRS, name="pairs-0", replay_from_ms=origin)
    again = PairActor(cfg, PAIRS, name="pairs-1", replay_from_ms=origin)  # no checkpoint of it
    assert not first.restored and not again.restored
    assert_same(first.book, again.book)
    recent = {s: b[b["ts"] >= origin] for s, b in bars.items()}
    for pair in PAIRS:
        y, x = parse_pair(pair)
        al, series, _, pos = batch_oracle(cfg, recent[y], recent[x])
        snap = first.snapshot(pair)
        n = int(np.sum(al.ts <= min(recent[y]["ts"][-1], recent[x]["ts"][-1])))
        assert n > 0 and snap["ts"][0] >= origin
        np.testing.assert_array_equal(snap["ts"], al.ts[:n])
        np.testing.assert_allclose(snap["z"], series.z[:n], rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(snap["position"], pos[:n])
    # without the argument (a store written by hand, tests): every stored bar
    full = PairActor(cfg, PAIRS)
    assert min(int(full.snapshot(p)["ts"][0]) for p in PAIRS) < origin
