"""Who may open a dashboard session.

`panel serve ui/` without authentication would show every pair, position and alert to anyone
who can reach its port. So, unless Panel authenticates users (``--basic-auth`` or an OAuth
provider) or the operator opts in with ``PAIRSTACK_ALLOW_REMOTE=1``, sessions are served only
to clients on this machine (loopback addresses); a remote browser is told why and what to do.
Behind a reverse proxy, serve with ``--use-xheaders`` so that the client's own address counts.
"""

from __future__ import annotations

import ipaddress
import os

#: environment variable by which the operator allows unauthenticated remote sessions
ALLOW_REMOTE_ENV = "PAIRSTACK_ALLOW_REMOTE"


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped forms; False for anything else."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def remote_allowed(environ: dict[str, str] | None = None) -> bool:
    """Whether the operator opted in (``PAIRSTACK_ALLOW_REMOTE`` set to 1/true/yes)."""
    value = (os.environ if environ is None else environ).get(ALLOW_REMOTE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes")


def refusal(client: str | None, authenticated: bool, allowed: bool) -> str | None:
    """Why a session for ``client`` (its IP address) is refused, or None when it is served."""
    if authenticated or allowed or is_loopback(client):
        return None
    return (
        f"This pairstack dashboard serves unauthenticated sessions only to its own machine, and "
        f"your address is {client or 'unknown'}. Ask its operator to serve it with Panel's "
        f"authentication (for example `panel serve ui/ --basic-auth FILE --cookie-secret "
        f"SECRET`), or to allow remote sessions explicitly with {ALLOW_REMOTE_ENV}=1."
    )


def session_refusal() -> str | None:
    """``refusal`` for the current Panel session (its request's address, Panel's auth)."""
    import panel as pn

    request = getattr(pn.state.curdoc.session_context, "request", None) if pn.state.curdoc else None
    client = getattr(request, "remote_ip", None) if request is not None else None
    authenticated = bool(pn.config.basic_auth or pn.config.oauth_provider or pn.state.user)
    return refusal(client, authenticated, remote_allowed())
