"""The real dashboard for browser tests: ``panel serve ui/`` as a subprocess on a free port,
joined to the session's Ray cluster, driven by Playwright in Debian's headless Chromium.

The server runs a copy of config/demo.yaml whose store is a tmp dir and whose windows are short
(z window 10, OLS window 30) so that z is defined a few seconds after start. Every page records
its console errors and every request; the ``page`` fixture fails a test whose page logged an
error or asked for anything outside 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 120.0
#: what Tornado logs when a browser tab closes while the server still sends to it: the client
#: went away, nothing in the app failed
CLIENT_GONE = ("tornado.websocket.WebSocketClosedError", "tornado.iostream.StreamClosedError")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*(\S.*)")


def server_exceptions(log_text: str) -> list[str]:
    """The exception line of every traceback in a server log, but those of a client gone."""
    return [e for e in _TRACEBACK.findall(log_text) if not e.startswith(CLIENT_GONE)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_config(tmp: Path, feed: dict | None = None) -> Path:
    """A copy of config/demo.yaml with its store under ``tmp``, short windows, ``feed`` merged."""
    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    raw["store"]["path"] = str(tmp / "store")
    raw["analytics"].update({"zscore_window": 10, "ols_window": 30})
    raw["feed"].update(feed or {})
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class Server:
    """A running ``panel serve ui/``: its URL, hub name and log."""

    def __init__(self, config: Path, ray_address: str, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/ui"
        self.hub_name = f"pairstack-hub-ui-{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        env = {
            **os.environ,
            "PAIRSTACK_CONFIG": str(config),
            "PAIRSTACK_HUB": self.hub_name,
        }
        if ray_address:  # else the server starts its own Ray
            env["RAY_ADDRESS"] = ray_address
        panel = Path(sys.executable).parent / "panel"
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                str(panel),
                "serve",
                "ui/",
                "--address",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--allow-websocket-origin",
                f"127.0.0.1:{self.port}",
                "--use-xheaders",  # as behind a proxy: a test can pose as a remote client
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"panel serve exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url, timeout=5.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"panel serve did not answer:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # as Ctrl-C: on_server_unloaded stops the engine
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def ray_address(ray_cluster) -> str:
    return ray_cluster.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def server(ray_address, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-server")
    srv = Server(demo_config(tmp), ray_address, tmp / "panel.log")
    yield srv
    srv.stop()
    # Bokeh reports document validation errors (a glyph naming a missing column, ...) only in
    # the server log, not in the browser console
    text = srv.log_path.read_text()
    invalid = re.findall(r"^.*\bE-\d{4} \(.*$", text, re.M)
    assert not invalid, f"Bokeh validation errors in the server log: {invalid[:5]}"
    # a callback that raised (e.g. a Bokeh model changed without the document lock) is only
    # logged by the server
    raised = server_exceptions(text)
    assert not raised, f"exception in the server log: {raised[:5]}\n{text[-3000:]}"


@pytest.fixture(scope="session")
def hub(server, ray_cluster):
    """The Hub of the server's engine (for checking what the page shows against it)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return ray_cluster.get_actor(server.hub_name, namespace="pairstack")
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def request_host(url: str) -> str:
    """The host a request goes to; ``blob:``/``data:`` URLs stay in the page."""
    if url.startswith("data:"):
        return "127.0.0.1"
    if url.startswith("blob:"):
        url = url[len("blob:") :]
    return urlparse(url).hostname or url


class PageLog:
    """Console errors and request hosts of one page."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.hosts.add(request_host(r.url)))


@contextmanager
def open_page(browser, url: str):
    """A fresh browser context on ``url``; on exit, no console error and no outside request."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    log = PageLog(pg)
    pg.goto(url)
    yield pg
    context.close()
    assert log.hosts <= {"127.0.0.1"}, f"requests left 127.0.0.1: {sorted(log.hosts)}"
    assert not log.errors, f"browser console errors: {log.errors}"


@pytest.fixture
def page(browser, server):
    with open_page(browser, server.url) as pg:
        yield pg


def to_docs(picture: Path, name: str) -> None:
    """Copy a screenshot to docs/ (the README shows it) when ``PAIRSTACK_UPDATE_DOCS=1``: an
    ordinary test run leaves the work tree as it was."""
    if os.environ.get("PAIRSTACK_UPDATE_DOCS") == "1":
        shutil.copy(picture, ROOT / "docs" / name)


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
