"""Alert rules on a pair's z-score, with hysteresis: pure logic, no Ray.

A rule watches one pair and one condition (``above``: z > level, ``below``: z < level,
``abs_above``: |z| > level). It fires once when the condition starts to hold and stays disarmed
until z has come back across its re-arm level (by default the level itself; for ``abs_above``,
|z| back at or under it). NaN z (warm-up) neither fires nor re-arms. So one crossing fires once,
however long z stays beyond the level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.errors import ConfigError

KINDS = ("above", "below", "abs_above")


@dataclass(frozen=True)
class AlertRule:
    """One condition on a pair's z-score; ``rearm`` defaults to ``level``."""

    pair: str
    kind: str
    level: float
    rearm: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"alert rule kind {self.kind!r}: expected one of {list(KINDS)}")
        if "/" not in self.pair:
            raise ConfigError(
                f"alert rule pair {self.pair!r}: expected 'Y/X', e.g. ETHUSDT/BTCUSDT"
            )
        if not math.isfinite(self.level):
            raise ConfigError(f"alert rule level {self.level!r}: expected a finite number")
        if self.kind == "abs_above" and self.level < 0:
            raise ConfigError(f"alert rule abs_above {self.level}: expected a level >= 0")
        if self.rearm is not None:
            if not math.isfinite(self.rearm):
                raise ConfigError(f"alert rule rearm {self.rearm!r}: expected a finite number")
            loose = self.rearm > self.level if self.kind == "below" else self.rearm < self.level
            if not (loose or self.rearm == self.level):
                raise ConfigError(
                    f"alert rule {self.kind} {self.level}: rearm {self.rearm} must lie on the"
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


def _opt(value: object) -> float | None:
    return None if value is None else float(value)


def rules_from_config(alerts: Iterable[object]) -> list[AlertRule]:
    """Rules from the config's ``alerts`` entries (structs with pair/above/below/abs_above)."""
    rules = []
    for entry in alerts:
        if isinstance(entry, dict):
            rules.append(AlertRule.from_dict(entry))
        else:
            d = {k: getattr(entry, k, None) for k in ("pair", "rearm", *KINDS)}
            rules.append(AlertRule.from_dict({k: v for k, v in d.items() if v is not None}))
    return rules


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
