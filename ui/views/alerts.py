"""Alert rules (define in the UI, YAML rules shown too), toasts when one fires, history."""

from __future__ import annotations

import html
import time

import pandas as pd
import panel as pn
from panel.viewable import Viewer

from engine.alerts import KINDS, AlertRule
from engine.errors import ConfigError
from ui.views.widgets import action_button, read_only_table

_WORDS = {"above": "z above", "below": "z below", "abs_above": "|z| above"}


def _when(ms: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000.0)) + " UTC"


class AlertsView(Viewer):
    """Form (``ps-alert-pair``, ``ps-alert-kind``, ``ps-alert-level``, ``ps-alert-add``), rules
    table ``ps-alert-rules`` and history table ``ps-alert-history``; a firing shows a toast."""

    title = "Alerts"

    def __init__(self, app: object, **params):
        super().__init__(**params)
        self.app = app
        pairs = list(app.state.config.pair_names)
        self.pair = pn.widgets.Select(
            name="Pair", options=pairs, css_classes=["ps-alert-pair"], width=200
        )
        self.kind = pn.widgets.Select(
            name="When",
            options={_WORDS[k]: k for k in KINDS},
            css_classes=["ps-alert-kind"],
            width=140,
        )
        self.level = pn.widgets.FloatInput(
            name="Level", value=2.0, step=0.1, css_classes=["ps-alert-level"], width=120
        )
        self.add = action_button("Add rule", "ps-alert-add", width=120, align="end")
        self.message = pn.pane.HTML("", css_classes=["ps-alert-message"])
        self.rules = read_only_table(
            "ps-alert-rules", 180, pd.DataFrame({"rule": pd.Series(dtype=object)})
        )
        self.history = read_only_table(
            "ps-alert-history",
            300,
            pd.DataFrame({c: pd.Series(dtype=object) for c in ("fired", "rule", "bar", "z")}),
            pagination="local",
            page_size=20,
        )
        self._seen = None  # alerts already toasted (count in the cache), set on first cache
        self._job = None  # (bridge Job, message when done) of the last rule change
        self._rules_shown: tuple = ()
        self.remove = pn.widgets.Button(
            name="Remove selected rule", css_classes=["ps-alert-remove"], width=200
        )
        self.add.on_click(lambda _: self.add_rule())
        self.remove.on_click(lambda _: self.remove_rule())

    def add_rule(self) -> None:
        try:
            rule = AlertRule(self.pair.value, self.kind.value, float(self.level.value))
        except ConfigError as exc:
            self.message.object = f"<p class='ps-error'>{html.escape(str(exc))}</p>"
            return
        self._job = (self.app.state.bridge.add_rule(rule.to_dict()), f"Rule added: {rule.key}")
        self.message.object = f"<p>Adding rule {html.escape(rule.key)}…</p>"

    def remove_rule(self) -> None:
        sel = self.rules.selection
        if not sel:
            self.message.object = "<p class='ps-error'>Select a rule in the table first.</p>"
            return
        key = str(self.rules.value.iloc[sel[0]]["rule"])
        self._job = (self.app.state.bridge.remove_rule(key), f"Rule removed: {key}")
        self.rules.selection = []
        self.message.object = f"<p>Removing rule {html.escape(key)}…</p>"

    def _job_done(self) -> None:
        """Say how the last rule change ended, once the bridge has its outcome."""
        job, said = self._job
        if not job.finished:
            return
        self._job = None
        if job.state == "failed":
            self.message.object = f"<p class='ps-error'>{html.escape(job.error or '')}</p>"
        else:
            self.message.object = f"<p class='ps-ok'>{html.escape(said)}</p>"

    def on_cache(self, cache) -> None:
        if self._job is not None:
            self._job_done()
        pairs = self.app.live_pairs()  # pairs added at run time too
        if pairs != list(self.pair.options):
            self.pair.options = pairs
        alerts = cache.alerts
        if self._seen is None:
            self._seen = len(alerts)  # a new session toasts what fires from now on
        for ev in alerts[self._seen :]:
            if pn.state.notifications is not None:
                pn.state.notifications.warning(
                    f"Alert {ev['rule']}: z = {ev['z']:.2f} at {_when(ev['ts'])}", duration=8000
                )
        self._seen = len(alerts)
        if len(alerts) != len(self.history.value):
            rows = list(reversed(alerts))
            self.history.value = pd.DataFrame(
                {
                    "fired": [_when(e["fired_at"]) for e in rows],
                    "rule": [e["rule"] for e in rows],
                    "bar": [_when(e["ts"]) for e in rows],
                    "z": [round(float(e["z"]), 4) for e in rows],
                }
            )
        if cache.rules != self._rules_shown:
            self._rules_shown = cache.rules
            keys = [AlertRule.from_dict(r).key for r in cache.rules]
            self.rules.value = pd.DataFrame({"rule": keys})

    def __panel__(self):
        return pn.Column(
            pn.Row(self.pair, self.kind, self.level, self.add),
            self.message,
            pn.pane.Markdown("**Rules** (from the YAML config and added here; persisted)"),
            self.rules,
            self.remove,
            pn.pane.Markdown("**History**"),
            self.history,
            sizing_mode="stretch_width",
        )
