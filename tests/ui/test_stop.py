"""Ctrl-C and SIGTERM stop `panel serve ui/` cleanly: exit 0 within 10 s, store flushed, pair
checkpoints written, and no process it started left behind (its own Ray cluster included).

The server runs as users start it, from a scrubbed environment (PATH, HOME and the config), in
a session of its own so that every process it starts can be found by session id afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.ui.conftest import ROOT, START_TIMEOUT_S, demo_config, free_port

pytestmark = pytest.mark.ui


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])


def _in_session(sid: int) -> list[str]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _session_of(int(name)) == sid:
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            out.append(f"{name} {cmd.decode(errors='replace')[:120]}")
    return out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_dashboard_and_everything_it_started(tmp_path, signum):
    config = demo_config(tmp_path)
    store = tmp_path / "store"
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "PAIRSTACK_CONFIG": str(config)}
    panel = Path(sys.executable).parent / "panel"
    log_path = tmp_path / "panel.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(panel), "serve", "ui/", "--address", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:  # up, and the feeds have stored ticks
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                try:
                    up = httpx.get(f"http://127.0.0.1:{port}/ui", timeout=5).status_code == 200
                except httpx.HTTPError:
                    up = False
                if up and (store / "ticks").is_dir():
                    break
                time.sleep(0.5)
            assert _in_session(proc.pid), "no process found in the server's session"
            sent = time.monotonic()
            proc.send_signal(signum)
            code = proc.wait(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log_path.read_text()
    assert code == 0, text[-3000:]
    assert took < 10.0, f"stopping took {took:.1f} s"
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-3000:]
    time.sleep(1.0)  # a process that outlived the server would still be there
    assert _in_session(proc.pid) == []
    assert list(store.glob("ticks/symbol=*/date=*/*.parquet"))
    assert list((store / "state" / "pairs").iterdir()), "no pair checkpoint written"
