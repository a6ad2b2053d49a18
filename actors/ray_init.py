"""Joining or starting Ray: one rule for the engine, the backtest verb and the UI server."""

from __future__ import annotations

import os


def init_ray(
    address: str | None, *, namespace: str | None = None, log_to_driver: bool = True
) -> bool:
    """Initialise Ray unless it already is; True when this call did it.

    Joins the cluster at ``address`` (else ``$RAY_ADDRESS``); with neither, starts a local one
    with every CPU and no dashboard. Ray never reconfigures the process's logging.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"namespace": namespace, "configure_logging": False, "log_to_driver": log_to_driver}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **kwargs)
    return True
