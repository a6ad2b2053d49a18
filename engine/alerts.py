"""Alert rules on a pair's z-score with hysteresis, and their persistent log: no Ray.

A rule watches one pair and one condition (``above``: z > level, ``below``: z < level,
``abs_above``: |z| > level). It fires once when the condition starts to hold and stays disarmed
until z has come back across its re-arm level (by default the level itself; for ``abs_above``,
|z| back at or under it). NaN z (warm-up) neither fires nor re-arms. So one crossing fires once,
however long z stays beyond the level.

``AlertRule`` is the one rule type: the config's ``alerts`` entries (YAML ``{pair, above: 2.0}``)
are AlertRules, and so are the rules added at run time (``{pair, kind, level, rearm}``).
``AlertBook`` keeps the armed state of a PairBook's rules; ``AlertLog`` persists the rules and
the fired-alert history under ``<store>/alerts/`` (JSON, written atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import msgspec

from engine.atomic import write_atomic
from engine.errors import ConfigError

KINDS = ("above", "below", "abs_above")
#: alert events kept in memory and on disk
HISTORY_LIMIT = 10_000


class AlertRuleError(ConfigError, ValueError):
    """A bad alert rule. Also a ValueError, so the config loader reports it under its key path."""


class AlertRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One condition on a pair's z-score; ``rearm`` defaults to ``level``.

    Built as ``AlertRule(pair, kind, level, rearm=None)`` or, in the config, with exactly one
    of ``above``/``below``/``abs_above`` holding the level; either way every field is filled
    (``kind``, ``level`` and the matching ``above``/``below``/``abs_above``).
    """

    pair: str
    kind: str | None = None
    level: float | None = None
    rearm: float | None = None
    above: float | None = None
    below: float | None = None
    abs_above: Annotated[float, msgspec.Meta(gt=0)] | None = None

    def __post_init__(self) -> None:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if self.kind is None and self.level is None:
            if not given:
                raise AlertRuleError("expected one of above, below, abs_above, got none")
            if len(given) > 1:
                raise AlertRuleError(
                    f"{given[1]}: expected only one of above, below, abs_above, got {given}"
                )
            _set(self, "kind", given[0])
            _set(self, "level", getattr(self, given[0]))
        if self.kind not in KINDS:
            raise AlertRuleError(f"alert rule kind {self.kind!r}: expected one of {list(KINDS)}")
        if self.level is None:
            raise AlertRuleError(f"alert rule {self.kind} on {self.pair!r}: expected a level")
        if given not in ([], [self.kind]):
            raise AlertRuleError(
                f"alert rule {self.kind} on {self.pair!r}: expected its level only, got {given}"
            )
        level = float(self.level)
        if given and float(getattr(self, self.kind)) != level:
            raise AlertRuleError(
                f"alert rule {self.kind} on {self.pair!r}: level {level} and"
                f" {self.kind} {getattr(self, self.kind)} differ"
            )
        _set(self, "level", level)
        _set(self, self.kind, level)
        if "/" not in self.pair:
            raise AlertRuleError(
                f"alert rule pair {self.pair!r}: expected 'Y/X', e.g. ETHUSDT/BTCUSDT"
            )
        if not math.isfinite(level):
            raise AlertRuleError(f"alert rule level {level!r}: expected a finite number")
        if self.kind == "abs_above" and level < 0:
            raise AlertRuleError(f"alert rule abs_above {level}: expected a level >= 0")
        if self.rearm is not None:
            _set(self, "rearm", float(self.rearm))
            if not math.isfinite(self.rearm):
                raise AlertRuleError(f"alert rule rearm {self.rearm!r}: expected a finite number")
            loose = self.rearm > level if self.kind == "below" else self.rearm < level
            if not (loose or self.rearm == level):
                raise AlertRuleError(
                    f"alert rule {self.kind} {level}: rearm {self.rearm} must lie on the"
                    " inner side of the level (hysteresis band)"
                )

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``ETHUSDT/BTCUSDT above 2.0``."""
        return f"{self.pair} {self.kind} {self.level:g}"

    @property
    def rearm_level(self) -> float:
        return self.level if self.rearm is None else self.rearm

    def triggered(self, z: float) -> bool:
        """True when z is beyond the level (the condition holds)."""
        if self.kind == "above":
            return z > self.level
        if self.kind == "below":
            return z < self.level
        return abs(z) > self.level

    def released(self, z: float) -> bool:
        """True when z has come back across the re-arm level."""
        if self.kind == "above":
            return z <= self.rearm_level
        if self.kind == "below":
            return z >= self.rearm_level
        return abs(z) <= self.rearm_level

    def to_dict(self) -> dict:
        return {"pair": self.pair, "kind": self.kind, "level": self.level, "rearm": self.rearm}

    @classmethod
    def from_dict(cls, d: dict) -> AlertRule:
        """From ``{"pair", "kind", "level", "rearm"?}`` or the YAML form ``{"pair", "above": 2}``
        (rearm optional)."""
        if "kind" in d:
            unknown = set(d) - {"pair", "kind", "level", "rearm"}
            if unknown:
                raise ConfigError(f"alert rule {d!r}: unknown keys {sorted(unknown)}")
            return cls(str(d["pair"]), str(d["kind"]), float(d["level"]), _opt(d.get("rearm")))
        given = [k for k in KINDS if d.get(k) is not None]
        unknown = set(d) - {"pair", "rearm", *KINDS}
        if unknown or len(given) != 1 or "pair" not in d:
            raise ConfigError(f"alert rule {d!r}: expected a pair and exactly one of {list(KINDS)}")
        return cls(str(d["pair"]), given[0], float(d[given[0]]), _opt(d.get("rearm")))


def _set(rule: AlertRule, name: str, value: object) -> None:
    msgspec.structs.force_setattr(rule, name, value)


def _opt(value: object) -> float | None:
    return None if value is None else float(value)


def rules_from_config(alerts: Iterable[AlertRule | dict]) -> list[AlertRule]:
    """Rules from AlertRules (the config's ``alerts``) or their dicts (``AlertRule.from_dict``)."""
    return [r if isinstance(r, AlertRule) else AlertRule.from_dict(r) for r in alerts]


@dataclass(frozen=True)
class AlertEvent:
    """A rule that fired: bar open time ``ts`` (ms) and the z that crossed."""

    rule: str
    pair: str
    kind: str
    level: float
    ts: int
    z: float

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "pair": self.pair,
            "kind": self.kind,
            "level": self.level,
            "ts": self.ts,
            "z": self.z,
        }


@dataclass
class AlertBook:
    """The rules of some pairs and their armed state; ``check`` once per pair step."""

    rules: dict[str, AlertRule] = field(default_factory=dict)
    armed: dict[str, bool] = field(default_factory=dict)

    def set_rules(self, rules: Iterable[AlertRule]) -> None:
        """Replace the rule set; rules kept from before keep their armed state."""
        new = {r.key: r for r in rules}
        self.armed = {k: self.armed.get(k, True) for k in new}
        self.rules = new

    def check(self, pair: str, ts: int, z: float) -> list[AlertEvent]:
        """Events fired by this pair's z at bar ``ts``; updates the armed state."""
        if math.isnan(z):
            return []
        fired = []
        for key, rule in self.rules.items():
            if rule.pair != pair:
                continue
            if self.armed[key]:
                if rule.triggered(z):
                    self.armed[key] = False
                    fired.append(AlertEvent(key, pair, rule.kind, rule.level, int(ts), float(z)))
            elif rule.released(z):
                self.armed[key] = True
        return fired


class AlertLog:
    """Alert rules and fired-alert history persisted under ``<store>/alerts/`` (JSON, atomic)."""

    def __init__(self, store_path: str | os.PathLike, default_rules: list[AlertRule]):
        self.dir = Path(store_path) / "alerts"
        self.rules_path = self.dir / "rules.json"
        self.history_path = self.dir / "history.jsonl"
        if self.rules_path.exists():
            raw = json.loads(self.rules_path.read_text())
            self.rules = [AlertRule.from_dict(d) for d in raw]
        else:
            self.rules = list(default_rules)
        self.history: list[dict] = []
        if self.history_path.exists():
            lines = self.history_path.read_text().splitlines()
            self.history = [json.loads(line) for line in lines if line.strip()]

    def set_rules(self, rules: list[AlertRule]) -> None:
        self.rules = list({r.key: r for r in rules}.values())
        write_atomic(self.rules_path, json.dumps([r.to_dict() for r in self.rules], indent=1))

    def record(self, events: list[dict]) -> list[dict]:
        """Append the events not recorded yet (one per rule and bar ts), the history kept in bar
        time order; returns them."""
        seen = {(e["rule"], e["ts"]) for e in self.history}
        events = [e for e in events if (e["rule"], e["ts"]) not in seen]
        if not events:
            return []
        self.history.extend(events)
        # by bar time: calls of a threaded Hub may run out of order (a warm start's first batch
        # fires many events, the next bar's follow within milliseconds)
        self.history.sort(key=lambda e: e["ts"])
        del self.history[:-HISTORY_LIMIT]
        write_atomic(
            self.history_path, "".join(json.dumps(e, allow_nan=False) + "\n" for e in self.history)
        )
        return events

    def since(self, since_ms: int | None) -> list[dict]:
        if since_ms is None:
            return list(self.history)
        return [e for e in self.history if e["fired_at"] > since_ms]
