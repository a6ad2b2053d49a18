"""Run the benchmarks: ``python -m bench [NAME ...] [--quick]``.

Each ``bench/bench_<name>.py`` exposes ``run(quick: bool) -> list[dict]``: one row per
measurement, each with at least ``case``, ``ours_s``, ``peer``, ``peer_s`` and ``ratio``
(peer time / our time; above 1 means we are faster) or, for benchmarks without a peer, the
figures they measure. Results go to ``bench/results/<name>.json`` with the machine's facts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def _table(rows: list[dict]) -> str:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    cells = [[_fmt(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {_discover()})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.names or _discover()
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.perf_counter()
        rows = module.run(quick=args.quick)
        doc = {
            "benchmark": name,
            "quick": args.quick,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "wall_s": time.perf_counter() - started,
            "rows": rows,
        }
        (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\n== {name} ==\n{_table(rows)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
