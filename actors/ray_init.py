"""Joining or starting Ray: one rule for the engine, the CLI verbs and the UI server.

Ray 2.60 starts local clusters with token authentication (``RAY_AUTH_MODE=token``, the token in
``~/.ray/auth_token`` unless ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` say otherwise), but a
process joining an explicit address authenticates only when ``RAY_AUTH_MODE=token`` is in its
environment; without it every call is refused (``InvalidAuthToken``, retried for ~20 s). So a
process joining a cluster takes the auth mode from the engine's record (``cluster_auth()`` as
written by ``pairstack run``), else uses a token when the cluster runs on this machine and a
token is available, the rule Ray itself applies to a local cluster found with ``address="auto"``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

AUTH_MODE_VAR = "RAY_AUTH_MODE"
TOKEN_VAR = "RAY_AUTH_TOKEN"
TOKEN_PATH_VAR = "RAY_AUTH_TOKEN_PATH"

#: seconds to wait for a TCP connection to a cluster's GCS before calling it gone
PROBE_TIMEOUT_S = 2.0


def default_token_path() -> Path:
    """Where Ray keeps the token when no variable names one: ``~/.ray/auth_token``."""
    return Path.home() / ".ray" / "auth_token"


def cluster_auth() -> dict[str, str | None]:
    """This process's Ray auth settings (after ``ray.init``), for the engine record:
    ``{"auth_mode": "token" | "disabled", "auth_token_path": file or None}`` (None when the
    token came from ``RAY_AUTH_TOKEN``, which is never written down)."""
    mode = os.environ.get(AUTH_MODE_VAR, "disabled").lower()
    path = None
    if mode == "token" and not os.environ.get(TOKEN_VAR):
        path = os.environ.get(TOKEN_PATH_VAR) or str(default_token_path())
    return {"auth_mode": mode, "auth_token_path": path}


def _token_available() -> bool:
    if os.environ.get(TOKEN_VAR):
        return True
    return Path(os.environ.get(TOKEN_PATH_VAR) or default_token_path()).is_file()


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` GCS address, None for other forms (``ray://``)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def is_local_host(host: str) -> bool:
    """Whether ``host`` is an address of this machine (binding to it succeeds)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((sockaddr[0], 0))
            except OSError:
                continue
            return True
    return False


def use_cluster_auth(address: str, record: dict | None = None) -> None:
    """Set Ray's auth variables in ``os.environ`` for joining the cluster at ``address``.

    Variables already set are respected. Else the engine ``record``'s ``auth_mode`` (and its token
    file, when readable) is used; else token mode when the cluster runs on this machine and a
    token is available. Call before ``ray.init``.
    """
    if os.environ.get(AUTH_MODE_VAR):
        return
    record = record or {}
    mode = record.get("auth_mode")
    if mode:
        path = record.get("auth_token_path")
        if (
            mode == "token"
            and path
            and not os.environ.get(TOKEN_VAR)
            and not os.environ.get(TOKEN_PATH_VAR)
            and os.access(path, os.R_OK)
        ):
            os.environ[TOKEN_PATH_VAR] = path
    else:
        where = _host_port(address)
        if where is None or not is_local_host(where[0]) or not _token_available():
            return
        mode = "token"
    os.environ[AUTH_MODE_VAR] = mode
    if "ray" in sys.modules:
        # Ray reads RAY_AUTH_MODE into its config when it is imported; re-read it, as Ray's own
        # switch to token auth for a new local cluster does
        from ray._raylet import Config

        Config.initialize("")


def probe_cluster(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """ConnectionError at once when nothing listens at a ``host:port`` address (a cluster that
    is gone), instead of Ray's long reconnect loop; other address forms pass."""
    where = _host_port(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing listens at {address} ({exc})") from None


def join_ray(address: str, *, record: dict | None = None, **init_kwargs: object) -> None:
    """``ray.init(address=address, **init_kwargs)`` with the cluster's auth (``use_cluster_auth``)
    after a quick check that it is there (ConnectionError when not)."""
    import ray

    if address != "auto":
        probe_cluster(address)
    use_cluster_auth(address, record)
    ray.init(address=address, **init_kwargs)


def init_ray(
    address: str | None, *, namespace: str | None = None, log_to_driver: bool = True
) -> bool:
    """Initialise Ray unless it already is; True when this call did it.

    Joins the cluster at ``address`` (else ``$RAY_ADDRESS``) with ``join_ray``; with neither,
    starts a local one with every CPU and no dashboard. Ray never reconfigures the process's
    logging.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"namespace": namespace, "configure_logging": False, "log_to_driver": log_to_driver}
    if address:
        join_ray(address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    return True
