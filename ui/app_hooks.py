"""Server lifecycle of ``panel serve ui/``: connect to the engine once, poll it from one bridge.

``on_server_loaded`` runs once per server process (not per session, not at import): it joins a
running Ray (``ray.address`` of the config, else ``RAY_ADDRESS``, else a local cluster), uses
the engine whose Hub is running there or, when none is, starts one in-process from
``PAIRSTACK_CONFIG`` (default config/pairs.yaml), then starts the bridge that polls the Hub.
Everything lands in ``pn.state.cache["pairstack"]``. ``on_server_unloaded``, Ctrl-C and SIGTERM
stop the bridge, the engine this server started (store flushed, checkpoints written) and the
local Ray cluster it started.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `panel serve ui/` runs from the repository root; make `ui` importable as a package
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ui.server import install_stop_handlers, start_server_state, stop_server_state  # noqa: E402


def on_server_loaded(server_context: object) -> None:
    start_server_state()
    install_stop_handlers()
    # the page's modules (its views, HoloViews and its bokeh backend) load with the server, so
    # that the first session does not pay for them
    import ui.app  # noqa: F401


def on_server_unloaded(server_context: object) -> None:
    stop_server_state()
