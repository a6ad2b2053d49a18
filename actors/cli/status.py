"""``pairstack status [--json]``: the status of a running engine, asked from its Hub."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from actors.cli.options import add_config_option
from actors.ray_init import join_ray
from engine.config import Config
from engine.errors import PairstackError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: the one `pairstack run --config FILE` recorded for"
        " --config, else RAY_ADDRESS, else the last engine started on this machine, else auto)",
    )
    add_config_option(
        parser,
        required=False,
        help="the engine's YAML config: its store holds the address `pairstack run` recorded",
    )
    parser.add_argument("--namespace", default=None, help="Ray namespace (default: pairstack)")
    parser.add_argument("--hub", default=None, help="Hub actor name (default: pairstack-hub)")


def format_status(status: dict) -> str:
    """Human-readable lines for the status object."""
    lines = []
    for i, f in enumerate(status["feeds"]):
        if not f["connected"]:
            state = "DOWN"
        elif not f.get("healthy", True):
            state = "UNHEALTHY: starved" if f.get("starved") else "UNHEALTHY"
        else:
            state = "up"
        rejected = sum(f["rejected"].values())
        lines.append(
            f"feed {i} [{state}] {len(f['symbols'])} symbols  {f['ticks_per_s']:.1f} ticks/s"
            f"  ticks {f['ticks']}  rejected {rejected}  backfilled {f['gaps_backfilled']}"
            f"  late {f['late_ticks']}  reconnects {f['reconnects']}"
        )
        for sym, ids in f.get("ids_behind", {}).items():
            lines.append(
                f"  ids went backwards on {sym}: the stream is at id {ids['stream']}, the store"
                f" holds up to {ids['store']}: the store was written from another source?"
            )
    for p in status["pairs"]:
        beta = "nan" if p["beta"] is None else f"{p['beta']:.4f}"
        z = "nan" if p["z"] is None else f"{p['z']:+.3f}"
        stale = "  STALE" if p.get("stale") else ""
        stale += "" if p.get("warm", True) else "  cold"
        lines.append(
            f"pair {p['pair']:<24} last bar {p['last_bar']}  beta {beta}  z {z}"
            f"  position {p['position']:+d}{stale}"
        )
    lat = status["latency_ms"]
    if lat["p50"] is None:
        lines.append("latency: no pair steps in the last 60 s")
    else:
        lines.append(
            f"latency ms: p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
        )
    return "\n".join(lines)


def _record(args: argparse.Namespace, config: Config | None) -> tuple[dict, Path | None]:
    """Where to look (address, hub, namespace, auth) and the file that said so, unless
    --address says: the record in the store of --config (required to exist), else RAY_ADDRESS,
    else the user's last recorded engine."""
    from actors.engine import read_engine_record, record_paths

    if args.address:
        return {}, None
    if config is not None:
        path = record_paths(config.store.path)[0]
        record = read_engine_record(path)
        if record is None:
            raise PairstackError(
                f"no running engine recorded in {path} (start one with"
                f" `pairstack run --config {args.config}`)"
            )
        return record, path
    if os.environ.get("RAY_ADDRESS"):
        return {"address": os.environ["RAY_ADDRESS"]}, None
    path = record_paths(".")[1]
    record = read_engine_record(path)
    return (record, path) if record is not None else ({}, None)


def _stale(record: dict, path: Path, why: str) -> PairstackError:
    """Forget a record whose engine is gone (both copies) and say that none runs."""
    from actors.engine import clear_engine_record

    clear_engine_record(record.get("store", "."), pid=record.get("pid"))
    path.unlink(missing_ok=True)
    return PairstackError(
        f"no running engine: the engine recorded in {path} (pid {record.get('pid')},"
        f" Ray at {record.get('address')!r}) {why}; removed its stale record"
        " (start one with `pairstack run --config FILE`)"
    )


def main(args: argparse.Namespace, config: Config | None) -> int:
    """Print the status of the engine found by ``_record`` (PairstackError when none runs)."""
    from actors.engine import engine_gone
    from actors.hub import HUB_NAME, NAMESPACE

    record, path = _record(args, config)
    if path is not None and engine_gone(record):
        raise _stale(record, path, "is not running")
    namespace = args.namespace or record.get("namespace") or NAMESPACE
    hub_name = args.hub or record.get("hub") or HUB_NAME
    address = args.address or record.get("address") or "auto"
    import ray

    try:
        join_ray(
            address,
            record=record,
            namespace=namespace,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except ConnectionError as exc:
        if path is not None:
            raise _stale(record, path, f"cannot be reached ({exc})") from None
        raise PairstackError(
            f"no running engine found at Ray address {address!r} ({exc});"
            " start one with `pairstack run --config FILE`"
        ) from None
    try:
        try:
            hub = ray.get_actor(hub_name, namespace=namespace)
        except ValueError:
            if path is not None and not (args.hub or args.namespace):
                raise _stale(record, path, f"left no actor {hub_name!r} in its cluster") from None
            raise PairstackError(
                f"the Ray cluster at {address!r} runs no pairstack engine"
                f" (no actor {hub_name!r} in namespace {namespace!r})"
            ) from None
        status = ray.get(hub.status.remote(), timeout=30)
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps(status, allow_nan=False))
    else:
        print(format_status(status))
    return 0
