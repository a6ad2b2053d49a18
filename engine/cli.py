"""The ``pairstack`` command.

Each verb lives in the module that owns it; that module exposes ``configure(parser)`` (adds the
verb's arguments) and ``main(args) -> int`` (runs it; exit code). Modules are imported only when
their verb runs, so ``pairstack --help`` stays fast and engine/ does not import Ray at start-up
(the ``run``/``status`` verbs live in actors/).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from engine.errors import PairstackError

#: verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "run": ("actors.cli_run", "run the engine (feeds, pairs, alerts) without the UI"),
    "status": ("actors.cli_status", "show a running engine's status"),
    "sim": ("engine.simulator.cli", "serve the local exchange simulator (Binance wire protocol)"),
    "import": ("engine.cli_import", "import Binance public-data files into the store"),
    "backtest": ("actors.cli_backtest", "backtest a pair over stored bars (or sweep a grid)"),
    "screen": ("actors.cli_screen", "test every pair of the stored symbols for cointegration"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pairstack",
        description="Real-time pair-trading research engine for Binance USD-M perpetual futures.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, (module_name, help_text) in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.configure(verb_parser)
        verb_parser.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.main(args) or 0)
    except PairstackError as exc:
        print(f"pairstack {args.verb}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
