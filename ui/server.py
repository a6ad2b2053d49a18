"""Server-wide state of the dashboard: the config, the engine (when this server started it) and
the bridge, made once per server process by ``app_hooks.on_server_loaded``."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

from actors.hub import HUB_NAME, NAMESPACE
from actors.ray_init import init_ray
from engine.config import load_config
from engine.pairstep import PairParams
from strategies import check_config
from ui.bridge import Bridge
from ui.history_jobs import CACHE_KEY as HISTORY_CACHE_KEY

log = logging.getLogger(__name__)

CACHE_KEY = "pairstack"
DEFAULT_CONFIG = "config/pairs.yaml"
#: signals that stop the server cleanly
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class ServerState:
    """What every session of this server shares."""

    config: object
    live_params: PairParams
    bridge: Bridge
    engine: object | None  # EngineHandle when this server started the engine
    owns_ray: bool = False  # this server started the local Ray cluster (shut down on stop)


def start_server_state() -> ServerState:
    """Join or start the engine for ``PAIRSTACK_CONFIG`` and start the bridge (once)."""
    import panel as pn
    import ray

    if CACHE_KEY in pn.state.cache:
        return pn.state.cache[CACHE_KEY]
    path = os.environ.get("PAIRSTACK_CONFIG", DEFAULT_CONFIG)
    config = load_config(path)
    check_config(config.strategy, path)
    hub_name = os.environ.get("PAIRSTACK_HUB", HUB_NAME)
    owns_ray = init_ray(config.ray.address, namespace=NAMESPACE, log_to_driver=False)
    engine = None
    try:
        hub = ray.get_actor(hub_name, namespace=NAMESPACE)
        config = ray.get(hub.config.remote(), timeout=30)
        log.info("dashboard: joined the running engine (hub %s)", hub_name)
    except ValueError:
        from actors.engine import start_engine

        log.info("dashboard: no engine running; starting one from %s", path)
        engine = start_engine(config, hub_name=hub_name, namespace=NAMESPACE)
        hub = engine.hub
    bridge = Bridge(
        hub,
        pairs=list(config.pair_names),
        symbols=list(config.symbols),
        timeframe=config.analytics.timeframe,
        store=config.store.path,
    )
    bridge.start()
    state = ServerState(
        config, PairParams.from_config(config.analytics), bridge, engine, owns_ray=owns_ray
    )
    pn.state.cache[CACHE_KEY] = state
    return state


def stop_server_state() -> None:
    """Stop the bridge, the engine this server started (feeds flush their stores, pairs write
    checkpoints) and the local Ray cluster it started."""
    import panel as pn
    import ray

    state = pn.state.cache.pop(CACHE_KEY, None)
    if state is None:
        return
    history = pn.state.cache.pop(HISTORY_CACHE_KEY, None)
    if history is not None:
        history.stop()
    state.bridge.stop()
    try:
        if state.engine is not None:
            state.engine.stop()
    except (ray.exceptions.RayError, TimeoutError) as exc:
        log.warning("dashboard: engine stop reported %s", exc)
    finally:
        if state.owns_ray:
            ray.shutdown()
    log.info("dashboard: stopped cleanly")


def install_stop_handlers() -> None:
    """Ctrl-C and SIGTERM stop the server cleanly (``stop_server_state``), then exit 0.

    Call from the main thread after Ray started: Ray's driver installs handlers of its own
    (SIGTERM would abort the process with a stack dump and leave its agents and workers
    behind); ours must win.
    """

    def on_signal(signum: int, _frame: object) -> None:
        log.info("dashboard: %s: stopping", signal.Signals(signum).name)
        for s in STOP_SIGNALS:  # a second signal while stopping does not interrupt the stop
            signal.signal(s, signal.SIG_IGN)
        stop_server_state()
        raise SystemExit(0)

    for s in STOP_SIGNALS:
        signal.signal(s, on_signal)
