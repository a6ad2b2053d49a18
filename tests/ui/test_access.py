"""Unauthenticated sessions are served only to this machine, unless the operator opts in.

The decision is tested on its own; the real server (run with ``--use-xheaders``, as behind a
reverse proxy) is then asked by a browser posing as a remote client through X-Forwarded-For.
"""

from __future__ import annotations

import pytest

from tests.ui.conftest import open_page
from ui.access import ALLOW_REMOTE_ENV, is_loopback, refusal, remote_allowed


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("192.168.1.20", False),
        ("203.0.113.7", False),
        ("::ffff:203.0.113.7", False),
        ("fe80::1%eth0", False),
        ("", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback


def test_refusal_rules():
    assert refusal("127.0.0.1", authenticated=False, allowed=False) is None
    why = refusal("203.0.113.7", authenticated=False, allowed=False)
    assert why is not None and "203.0.113.7" in why and ALLOW_REMOTE_ENV in why
    assert "--basic-auth" in why
    assert refusal("203.0.113.7", authenticated=True, allowed=False) is None
    assert refusal("203.0.113.7", authenticated=False, allowed=True) is None
    assert refusal(None, authenticated=False, allowed=False) is not None


@pytest.mark.parametrize(
    ("value", "allowed"), [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)]
)
def test_opt_in_switch(value, allowed):
    assert remote_allowed({ALLOW_REMOTE_ENV: value}) is allowed
    assert remote_allowed({}) is False


@pytest.mark.ui
def test_remote_browser_is_told_why_and_sees_no_data(browser, server):
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.7"})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server.url)
    page.locator(".ps-refused").wait_for()
    page.get_by_text("your address is 203.0.113.7", exact=False).wait_for()
    assert page.locator(".ps-status").count() == 0
    assert page.locator(".ps-pair-select").count() == 0
    context.close()


@pytest.mark.ui
def test_local_browser_is_served(browser, server):
    with open_page(browser, server.url) as page:
        page.locator(".ps-pair-select").first.wait_for()
        assert page.locator(".ps-refused").count() == 0
