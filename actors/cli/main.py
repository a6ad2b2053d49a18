"""The ``pairstack`` command: the parser and ``main()``.

Each verb is a module of this package with ``configure(parser)`` (adds the verb's arguments) and
``main(args) -> int`` (runs it; exit code), or ``main(args, config)`` when it has the shared
``--config`` option (``actors.cli.options``): the dispatcher loads that file once, and a bad one
exits 2 before anything starts. Only the module of the verb being run is imported (the sim verb
alone pulls in scipy through the market model), so ``pairstack --help`` and ``pairstack status``
start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from types import ModuleType

from actors.cli.options import load_config_option, takes_config
from engine.errors import PairstackError

#: verb -> one-line help
VERBS: dict[str, str] = {
    "run": "run the engine (feeds, pairs, alerts) without the UI",
    "status": "show a running engine's status",
    "sim": "serve the local exchange simulator (Binance wire protocol)",
    "import": "import Binance public-data files into the store",
    "download": "download history from Binance's public-data archive into the store",
    "backtest": "backtest a pair over stored bars (or sweep a grid)",
    "screen": "test every pair of stored symbols for cointegration, on all cores",
}


def verb_module(verb: str) -> ModuleType:
    """The module that implements ``verb`` (imported on first use)."""
    match verb:
        case "run":
            from actors.cli import run as module
        case "status":
            from actors.cli import status as module
        case "sim":
            from actors.cli import sim as module
        case "import":
            from actors.cli import import_files as module
        case "download":
            from actors.cli import download as module
        case "backtest":
            from actors.cli import backtest as module
        case "screen":
            from actors.cli import screen as module
        case _:
            raise KeyError(f"unknown verb {verb!r}; expected one of {list(VERBS)}")
    return module


def build_parser(configured: Iterable[str] = tuple(VERBS)) -> argparse.ArgumentParser:
    """The ``pairstack`` parser; the verbs in ``configured`` get their arguments."""
    parser = argparse.ArgumentParser(
        prog="pairstack",
        description="Real-time pair-trading research engine for Binance USD-M perpetual futures.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    configured = set(configured)
    for verb, help_text in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        if verb in configured:
            verb_module(verb).configure(verb_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``pairstack ARGV``; exit code (2: refused, with the reason on stderr)."""
    argv = sys.argv[1:] if argv is None else argv
    # the top level has no options but -h: a valid command line names its verb first
    args = build_parser(argv[:1]).parse_args(argv)
    module = verb_module(args.verb)
    try:
        if takes_config(args):
            return int(module.main(args, load_config_option(args)) or 0)
        return int(module.main(args) or 0)
    except PairstackError as exc:
        print(f"pairstack {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
