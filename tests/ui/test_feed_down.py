"""With the exchange unreachable the page says so plainly, keeps retrying, shows nothing as live.

A second server whose feed points at a closed loopback port (as live Binance is from here).
"""

from __future__ import annotations

import re

import pytest
from conftest import Server, demo_config, free_port, open_page, screenshot
from playwright.sync_api import expect

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def down_server(ray_address, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-down")
    port = free_port()  # nothing listens there
    feed = {
        "source": "binance",
        "ws_url": f"ws://127.0.0.1:{port}/market",
        "rest_url": f"http://127.0.0.1:{port}",
    }
    srv = Server(demo_config(tmp, feed), ray_address, tmp / "panel.log")
    yield srv
    srv.stop()


def test_feed_down_banner_and_no_live_numbers(browser, down_server):
    with open_page(browser, down_server.url) as page:
        banner = page.locator(".ps-feed-banner.ps-state-feed-down")
        expect(banner).to_contain_text("Feed down", timeout=60_000)
        expect(banner).to_contain_text("NOT live")
        expect(banner).to_contain_text("reconnecting")
        attempts = re.compile(r"retrying: [1-9]\d* failed connection attempts, last error: \w")
        expect(banner).to_contain_text(attempts, timeout=60_000)
        assert page.locator(".ps-feed-banner.ps-state-live").count() == 0
        expect(page.locator(".ps-kpis .ps-stale")).to_be_visible()
        expect(page.locator(".ps-kpis")).to_contain_text("NOT live")
        expect(page.locator(".ps-status")).to_contain_text("0/1")
        screenshot(page, "feed_down")
