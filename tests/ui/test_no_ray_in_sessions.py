"""Sessions never call Ray: the session code (the App, the views, the services) names neither
``ray`` nor ``.remote``; what a session asks of the engine is a bridge ``Job`` that the
bridge's thread starts on Ray and completes without anyone waiting on it."""

from __future__ import annotations

import ast
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from actors.screen import screen_recent
from engine.errors import ConfigError
from tests.engine.test_screen import generated_bars
from ui.bridge import Bridge

UI = Path(__file__).resolve().parents[2] / "ui"
SESSION_CODE = [UI / "app.py", UI / "services.py", UI / "session.py", *UI.glob("views/*.py")]


@pytest.mark.parametrize("path", SESSION_CODE, ids=lambda p: p.name)
def test_session_code_never_names_ray(path):
    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imported = {
        alias.name.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for alias in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])
    }
    assert "ray" not in names | imported, f"{path.name} uses ray"
    assert not {"remote", "get_actor"} & attrs, f"{path.name} calls Ray actors"


def _until_finished(bridge: Bridge, *jobs, limit_s: float = 120.0) -> list:
    seen = []
    deadline = time.monotonic() + limit_s
    while not all(j.finished for j in jobs):
        assert time.monotonic() < deadline, [j.state for j in jobs]
        bridge.run_jobs()
        seen.extend(j.progress for j in jobs if j.progress is not None)
        time.sleep(0.1)
    return seen


def test_bridge_jobs_run_on_ray_without_blocking_the_session(ray_cluster):
    class SlowHub:  # defined here: Ray ships it by value to its worker
        """A Hub's command methods, slow or failing."""

        def add_rule(self, rule: dict) -> list[dict]:
            time.sleep(1.5)
            return [rule]

        def remove_rule(self, key: str) -> None:
            raise ConfigError(f"no alert rule {key!r}")

    hub = ray_cluster.remote(SlowHub).options(name=f"slow-hub-{uuid.uuid4().hex[:8]}").remote()
    bridge = Bridge(hub, pairs=[], symbols=[], timeframe="1s")
    started = time.monotonic()
    added = bridge.add_rule({"pair": "A/B", "above": 2.0})
    removed = bridge.remove_rule("A/B above 2")
    assert added.state == removed.state == "queued"  # nothing ran in the session's call
    bridge.run_jobs()  # the bridge's thread: starts them, does not wait for them
    assert time.monotonic() - started < 1.0
    assert added.state == "running" and not added.finished
    _until_finished(bridge, added, removed)
    assert added.state == "done", added.error
    assert added.result == [{"pair": "A/B", "above": 2.0}]
    assert removed.state == "failed" and "no alert rule 'A/B above 2'" in removed.error
    ray_cluster.kill(hub)


def test_bridge_screen_runs_in_an_actor_with_progress(ray_cluster):
    bars = generated_bars(3)
    bridge = Bridge(None, pairs=[], symbols=[], timeframe="5m")
    job = bridge.screen(bars, "log", "5m", min_bars=100)
    progress = _until_finished(bridge, job)
    assert job.state == "done", job.error
    want = screen_recent(bars, "log", "5m", min_bars=100)
    assert job.result.table["pair"].tolist() == want.table["pair"].tolist()
    np.testing.assert_array_equal(job.result.table["eg_pvalue"], want.table["eg_pvalue"])
    assert job.result.excluded == want.excluded
    assert all(0 <= done <= total for done, total in progress)
    assert not bridge._running  # its actor was released
