"""The ``--config FILE`` option shared by the verbs that take one, and its one loader."""

from __future__ import annotations

import argparse

from engine.config import Config, load_config
from strategies import check_config


def add_config_option(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    """Add ``--config FILE``; the dispatcher then loads it and passes it to the verb's ``main``."""
    parser.add_argument("--config", required=required, default=None, metavar="FILE", help=help)


def takes_config(args: argparse.Namespace) -> bool:
    """Whether the verb of ``args`` has the ``--config`` option."""
    return hasattr(args, "config")


def load_config_option(args: argparse.Namespace) -> Config | None:
    """The validated config of ``--config`` (None when not given).

    A file that cannot run is refused here, before anything starts: ConfigError naming the file,
    the key path and what is wrong (the dispatcher turns it into exit code 2). That includes a
    ``strategy`` section that names no usable strategy class or gives it bad ``params``
    (``strategies.check_config`` builds the strategy once).
    """
    if args.config is None:
        return None
    config = load_config(args.config)
    check_config(config.strategy, args.config)
    return config
