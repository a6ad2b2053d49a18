"""The dashboard page: ``panel serve ui/`` (see ui/app_hooks.py for the server side)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import panel as pn  # noqa: E402

from ui.app import build  # noqa: E402

pn.extension("tabulator", notifications=True, sizing_mode="stretch_width")
build().servable(title="pairstack")
