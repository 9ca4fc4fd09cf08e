"""The floors under snapshot_vs_dlt.py's cases: what httpx and phonenumbers cost alone.

What the libraries the product must use cost in each case, before any work of its own.
A fresh process a round, beside the same simulator (in this process, as snapshot_vs_dlt.py runs
it), measures three floors over every workspace of the case:
- `httpx`: the case's page requests made with bare httpx, one-connection clients, `concurrency`
  at once (the product's client without validation, Arrow records, budget or retries);
- `read`: the product's client reading every listing (`read_listing`): the requests above and
  the product's own work on each answer;
- `countries`: phonenumbers' public API over the numbers read (`normalize.resolve`), in CPU
  seconds of one thread: the country the design asks for, derived once for a new number.
Dagster's own share (start-up, each workspace's events) is what `dagster_floor.py` prints.

For a case with a bound the wall times are also printed as a share of it: the case allows
`bound_factor x bound` beyond start-up for reading, normalizing and storing together.

    .venv/bin/python benchmarks/floors.py [--only big] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import uvloop  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from snapshot_vs_dlt import API_KEY, CASES, Case, simulator_for  # noqa: E402

from pipelines.config import FetchSettings  # noqa: E402
from pipelines.normalize import resolve  # noqa: E402
from pipelines.synthflow.client import Endpoint, SynthflowClient  # noqa: E402
from pipelines.synthflow.listing import read_listing  # noqa: E402

FLOORS = ("httpx", "read", "countries")
DEFAULT_CASES = ("big", "many", "volume")
T = TypeVar("T")


async def _bare_requests(case: Case, base_url: str, workspace_ids: list[str]) -> None:
    size = min(case.page_size, case.page_cap or case.page_size)
    free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
    tls = httpx.create_ssl_context()  # one for all, as the product's clients share one
    clients = [
        httpx.AsyncClient(verify=tls, limits=httpx.Limits(max_connections=1), timeout=60)
        for _ in range(case.concurrency)
    ]
    for client in clients:
        free.put_nowait(client)

    async def page(workspace_id: str, offset: int) -> None:
        client = await free.get()
        try:
            params = {"workspace": workspace_id, "limit": size, "offset": offset}
            headers = {"Authorization": f"Bearer {API_KEY}"}
            answer = await client.get(f"{base_url}/numbers", params=params, headers=headers)
            answer.raise_for_status()
        finally:
            free.put_nowait(client)

    offsets = range(0, max(case.numbers, 1), size)
    await asyncio.gather(*(page(wid, offset) for wid in workspace_ids for offset in offsets))
    for client in clients:
        await client.aclose()


async def _read(case: Case, base_url: str, workspace_ids: list[str]) -> list[str]:
    # As snapshot_vs_dlt.py sets the product: a `defaults` case with no fetch settings at all.
    fetch = (
        FetchSettings()
        if case.defaults
        else FetchSettings(
            page_size=case.page_size,
            concurrency=case.concurrency,
            requests_per_second=case.client_rate,
        )
    )
    async with SynthflowClient(fetch) as client:
        listings = await asyncio.gather(
            *(
                read_listing(client, Endpoint(wid, base_url, SecretStr(API_KEY)))
                for wid in workspace_ids
            )
        )
    return [number for listing in listings for number in listing.numbers["number"].to_pylist()]


def _on_uvloop(work: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as the product runs
        return runner.run(work)


def child(case_name: str, base_url: str, workspace_ids: list[str]) -> None:
    """One round: each floor in turn, printed as JSON."""
    case = next(case for case in CASES if case.name == case_name)
    # Warm: httpx imports its transport's modules on the first request.
    _on_uvloop(_bare_requests(replace(case, numbers=1), base_url, workspace_ids[:1]))
    started = time.perf_counter()
    _on_uvloop(_bare_requests(case, base_url, workspace_ids))
    bare_s = time.perf_counter() - started
    started = time.perf_counter()
    numbers = _on_uvloop(_read(case, base_url, workspace_ids))
    read_s = time.perf_counter() - started
    started = time.thread_time()
    for number in numbers:
        resolve(number)
    countries_s = time.thread_time() - started
    figures = {"httpx": bare_s, "read": read_s, "countries": countries_s}
    print(json.dumps(figures | {"numbers": len(numbers)}))


def measure(case: Case, rounds: int) -> dict[str, float]:
    """Median seconds of each floor over `rounds` fresh processes."""
    runs = []
    with simulator_for(case) as sim:
        for index in range(rounds):
            command = [sys.executable, __file__, "--child", case.name, sim.base_url]
            command += sim.workspace_ids()
            out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(
                    f"{case.name}: the measuring process failed:\n{out.stderr[-3000:]}"
                )
            figures = json.loads(out.stdout)
            if figures["numbers"] != case.total:
                raise SystemExit(
                    f"{case.name}: read {figures['numbers']} numbers, not {case.total}"
                )
            runs.append(figures)
            shown = ", ".join(f"{name} {figures[name]:.2f} s" for name in FLOORS)
            print(f"[{case.name}] round {index + 1}/{rounds}: {shown}", file=sys.stderr, flush=True)
    return {name: statistics.median(run[name] for run in runs) for name in FLOORS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Bare httpx neither paces nor retries: a case whose server answers 429 has no such floor.
    unlimited = [case.name for case in CASES if case.server_rate is None]
    parser.add_argument("--only", action="append", choices=unlimited, metavar="CASE")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2:])
        return 0
    names = args.only or DEFAULT_CASES
    print(
        f"medians of {args.rounds} rounds; httpx and read: wall s; countries: CPU s of one thread"
    )
    print(
        f"{'case':8} {'bound s':>8} {'allowed s':>10} {'httpx':>14} {'read':>14} {'countries':>10}"
    )
    for case in (case for case in CASES if case.name in names):
        floors = measure(case, args.rounds)
        if case.bound_factor is None:
            bound = allowed = "-"
            walls = [f"{floors[name]:.2f}" for name in ("httpx", "read")]
        else:
            bound, allowed = f"{case.bound_s:.2f}", f"{case.bound_factor * case.bound_s:.2f}"
            walls = [f"{floors[n]:.2f} ({floors[n] / case.bound_s:.0%})" for n in ("httpx", "read")]
        print(
            f"{case.name:8} {bound:>8} {allowed:>10} {walls[0]:>14} {walls[1]:>14} "
            f"{floors['countries']:10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
