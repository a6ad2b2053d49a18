"""The strategy interface: a target position decided at each bar's close.

A strategy is pure (no Ray, no I/O). Its whole state is one small float64 array (the position
first), and one numba step kernel moves it forward by a bar:

    kernel(state: float64[:], z: float, spread: float, args: tuple) -> int (target position)

``args`` is the tuple ``kernel_args()`` builds once per strategy (by default ``entry, exit,
stop`` with stop +inf when there is none, then the fields of the strategy's own ``params`` in
declared order). Everything else is derived from the kernel, the same for every strategy:
``step`` (live, one bar) calls it, ``run`` (batch, many bars) and ``step_many`` (live, many
pairs per call) loop it in numba (``kernel_drivers``), so stepping bar by bar gives exactly the
batch positions, running chunks one after the other gives exactly one run over the whole
series, and row i of ``step_many`` moves exactly as a strategy of its own.

A strategy class (built in or a plug-in, see docs/strategies.md) sets ``name``,
``initial_state``, ``kernel`` and, when it has parameters of its own, ``params_type`` (a frozen
msgspec Struct that forbids unknown fields: ``strategy.params`` is validated into it).

Positions: +1 long spread (buy y, sell beta x), -1 short spread, 0 flat.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
import numpy as np
from numba import njit
from numba.core.dispatcher import Dispatcher

from engine.config import StrategyConfig, parse_section
from engine.errors import ConfigError, DataError


def _as_series(name: str, values: Any, n: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} values but z has {n}: lengths must match")
    return arr


def bands(config: StrategyConfig) -> tuple[float, float, float]:
    """(entry, exit, stop) of a StrategyConfig as the kernels take them: stop +inf when None.

    The thresholds were checked by StrategyConfig (engine.config), the one place that does."""
    stop = math.inf if config.stop is None else float(config.stop)
    return float(config.entry), float(config.exit), stop


@functools.cache
def kernel_drivers(kernel: Dispatcher) -> tuple[Callable[..., None], Callable[..., None]]:
    """``(run, step_many)``: the numba loops of a step kernel, compiled once per process.

    ``run(state, z, spread, args, out)``: the kernel over every bar, positions into ``out``
    (int8). ``step_many(states, z, spread, mask, args, out)``: the kernel on each row i of
    ``states`` with ``mask[i]``; every row's position into ``out`` (unmasked rows: their current
    position, unchanged). Oracle: the kernel called bar by bar from Python
    (tests/strategies/test_step_many.py).

    Not cached on disk: numba keys a function that closes over another jitted function by a
    per-process id, so such a cache would never hit and only grow. The kernel itself is cached
    (``@njit(cache=True)``); compiling these two loops takes a fraction of a second.
    """

    @njit
    def run(state, z, spread, args, out):
        for i in range(z.shape[0]):
            out[i] = kernel(state, z[i], spread[i], args)

    @njit
    def step_many(states, z, spread, mask, args, out):
        for i in range(states.shape[0]):
            if mask[i]:
                out[i] = kernel(states[i], z[i], spread[i], args)
            else:
                out[i] = int(states[i, 0])

    return run, step_many


def contract_problem(cls: type) -> str | None:
    """What keeps ``cls`` from being a usable strategy class (None: nothing)."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or cls is Strategy:
        return "is not a pairstack Strategy class (expected a subclass of strategies.Strategy)"
    name = getattr(cls, "name", None)
    if not (isinstance(name, str) and name):
        return "has no name (set the class attribute name = '...')"
    if not isinstance(getattr(cls, "kernel", None), Dispatcher):
        return (
            "has no step kernel (set the class attribute kernel to a numba @njit function "
            "(state, z, spread, args) -> position)"
        )
    state = getattr(cls, "initial_state", None)
    if not (
        isinstance(state, tuple)
        and state
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in state)
    ):
        return (
            "has no initial_state (set it to a non-empty tuple of floats, the position first)"
        )
    params_type = cls.params_type
    if params_type is not None and not (
        isinstance(params_type, type)
        and issubclass(params_type, msgspec.Struct)
        and params_type.__struct_config__.forbid_unknown_fields
    ):
        return (
            "has a params_type that is not a msgspec Struct with forbid_unknown_fields=True "
            f"(got {params_type!r})"
        )
    return None


class Strategy:
    """Target position (-1/0/+1) from the z-score (and, for some strategies, the spread).

    Built from a StrategyConfig (engine.config), which has already checked the thresholds;
    ``config.params`` is validated here into ``params_type`` (ConfigError naming the key path,
    e.g. ``strategy.params.cooldown_bars: expected int >= 1, got 0``) and kept as ``params``.
    Subclasses set the class attributes below and, when their kernel wants other arguments than
    the default ones, override ``kernel_args``; ``step``/``run``/``step_many``/``new_states``/
    ``reset``/``position`` come from here.
    """

    #: the name of the strategy (``strategy.name`` of a built-in or registered one)
    name: ClassVar[str]
    #: the kernel state of a fresh strategy (flat, nothing seen): float64 values, position first
    initial_state: ClassVar[tuple[float, ...]]
    #: the numba step kernel ``(state, z, spread, args) -> position``
    kernel: ClassVar[Dispatcher]
    #: the strategy's own parameters (``strategy.params``), a msgspec Struct; None: it has none
    params_type: ClassVar[type[msgspec.Struct] | None] = None

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config
        self.params = self._parse_params(config.params)
        self._args = self.kernel_args()
        self._state = np.array(self.initial_state, dtype=np.float64)

    @classmethod
    def _parse_params(cls, params: dict[str, Any]) -> msgspec.Struct | None:
        if cls.params_type is None:
            if params:
                raise ConfigError(
                    f"strategy.params: {cls.name} takes no params, got {sorted(params)}; its "
                    "settings are the strategy keys (entry, exit, stop, ...): remove params"
                )
            return None
        return parse_section(params, cls.params_type, "", "strategy.params")

    def kernel_args(self) -> tuple:
        """The kernel's ``args``: ``(entry, exit, stop)`` (stop +inf when None), then the
        fields of ``params`` in declared order."""
        own = () if self.params is None else msgspec.structs.astuple(self.params)
        return (*bands(self.config), *own)

    def reset(self) -> None:
        """Forget everything: flat, nothing blocked, no history."""
        self._state[:] = self.initial_state

    @property
    def position(self) -> int:
        """The current target position (-1, 0 or +1)."""
        return int(self._state[0])

    def step(self, z: float, spread: float = math.nan) -> int:
        """Advance one bar with its z-score (and spread); returns the target position."""
        return int(type(self).kernel(self._state, float(z), float(spread), self._args))

    def run(self, z: np.ndarray, spread: np.ndarray | None = None) -> np.ndarray:
        """Advance over many bars; returns the int8 target position after each bar.

        Continues from the current state and leaves the state after the last bar, exactly as
        calling ``step`` on each bar would.
        """
        z_arr = _as_series("z", z)
        if spread is None:
            spread_arr = np.full(z_arr.shape[0], np.nan)
        else:
            spread_arr = _as_series("spread", spread, z_arr.shape[0])
        out = np.empty(z_arr.shape[0], dtype=np.int8)
        run, _ = kernel_drivers(type(self).kernel)
        run(self._state, z_arr, spread_arr, self._args, out)
        return out

    def new_states(self, n: int) -> np.ndarray:
        """Fresh states of ``n`` pairs, one row each (float64, shape (n, state size))."""
        return np.tile(np.asarray(self.initial_state, dtype=np.float64), (n, 1))

    def step_many(
        self, states: np.ndarray, z: np.ndarray, spread: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        """Advance row i of ``states`` by one bar (``z[i]``, ``spread[i]``) where ``mask[i]``;
        returns every row's int8 target position (unmasked rows: unchanged).

        Row i moves exactly as a strategy whose ``step`` got the same bars.
        """
        n = states.shape[0] if isinstance(states, np.ndarray) and states.ndim == 2 else -1
        if (
            n < 0
            or states.dtype != np.float64
            or not states.flags.c_contiguous
            or states.shape[1] != len(self.initial_state)
        ):
            raise DataError(
                f"states must be a C-contiguous float64 array of shape (n, "
                f"{len(self.initial_state)}) from new_states"
            )
        z_arr = _as_series("z", z, n)
        spread_arr = _as_series("spread", spread, n)
        m = np.asarray(mask)
        if m.shape != (n,) or m.dtype != np.bool_:
            raise DataError(f"mask must be a boolean array of shape ({n},)")
        out = np.empty(n, dtype=np.int8)
        _, step_many = kernel_drivers(type(self).kernel)
        step_many(states, z_arr, spread_arr, m, self._args, out)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
