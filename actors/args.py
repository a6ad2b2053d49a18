"""Constructor arguments of restartable actors: plain data only.

Ray restarts an actor with the arguments it was created with; anything held in the object store
(an actor handle, a large object) may be gone by then. So the engine hands restartable actors
the config as ``Config.to_dict()`` and other actors by name, and they rebuild both here.
"""

from __future__ import annotations


def as_config(config: object) -> object:
    """The Config, from itself or from its ``to_dict()``."""
    if isinstance(config, dict):
        from engine.config import parse_config

        return parse_config(config)
    return config


def lookup_actor(name: str, namespace: str | None) -> object | None:
    """The named actor's handle, None when there is none (Ray must be initialised)."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
