"""What does a page cost the client, on the transport runs use next to httpx's own?

Reads one workspace of 50,000 numbers (500 pages, page cap 100, 50 ms latency) with
`SynthflowClient.fetch_page`, 16 requests in flight, on uvloop, alternating two transports:
`http_transport` (httpx's interface over aiohttp's connections, what runs use) and httpx's
own `AsyncHTTPTransport` (httpcore and h11, pure Python). The simulator serves from another
process, so the client's CPU is its own. Prints the median of the rounds: wall time and the
client's CPU a request, with ratios.

The bound for the wall time is pages x latency / concurrency (1.56 s); each request costs at
least the 50 ms latency.

Run: .venv/bin/python benchmarks/http_client.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import httpx
import uvloop
from pydantic import SecretStr

from pipelines.config import FetchSettings
from pipelines.synthflow.client import Endpoint, RequestCounts, SynthflowClient, http_transport
from pipelines.synthflow.simulator import demo_simulator

NUMBERS, PAGE_CAP, LATENCY_S, CONCURRENCY = 50_000, 100, 0.05, 16
KEY = "bench-not-a-real-key"
TRANSPORTS = {
    "aiohttp (runs)": lambda: http_transport(CONCURRENCY),
    "httpx's own": lambda: httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=CONCURRENCY)
    ),
}


def serve() -> None:
    """The simulator, in this process until stdin closes; prints its URL and workspace."""
    with demo_simulator(
        seed=7,
        workspaces=1,
        numbers_per_workspace=NUMBERS,
        latency_s=LATENCY_S,
        page_size_cap=PAGE_CAP,
    ) as simulator:
        print(simulator.base_url, simulator.workspace_ids()[0], flush=True)
        sys.stdin.read()


async def read_all(endpoint: Endpoint, transport: httpx.AsyncBaseTransport) -> int:
    """Every page once, through `fetch_page`; how many requests that took."""
    fetch = FetchSettings(concurrency=CONCURRENCY, page_size=PAGE_CAP, requests_per_second=1e6)
    counts = RequestCounts()
    async with SynthflowClient(fetch, transport=transport) as client:
        offsets = range(0, NUMBERS, PAGE_CAP)
        await asyncio.gather(*(client.fetch_page(endpoint, o, PAGE_CAP, counts) for o in offsets))
    return counts.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        base_url, workspace_id = server.stdout.readline().decode().split()
        endpoint = Endpoint(workspace_id, base_url, SecretStr(KEY))
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in TRANSPORTS}
        for _ in range(args.rounds):
            for name, transport in TRANSPORTS.items():
                wall, cpu = time.perf_counter(), time.process_time()
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    requests = runner.run(read_all(endpoint, transport()))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                figures[name].append((wall, cpu / requests))
    finally:
        server.stdin.close()
        server.wait()
    bound = NUMBERS / PAGE_CAP * LATENCY_S / CONCURRENCY
    print(f"{NUMBERS // PAGE_CAP} pages, {CONCURRENCY} in flight, {LATENCY_S * 1000:g} ms latency")
    print(f"median of {args.rounds} alternated rounds; bound {bound:.2f} s")
    medians = {
        name: [statistics.median(column) for column in zip(*rows, strict=True)]
        for name, rows in figures.items()
    }
    print(f"{'transport':16s} {'wall s':>7s} {'x bound':>8s} {'CPU ms/request':>14s}")
    for name, (wall, cpu) in medians.items():
        print(f"{name:16s} {wall:7.2f} {wall / bound:8.2f} {cpu * 1000:14.2f}")
    (ours, ours_cpu), (theirs, theirs_cpu) = medians.values()
    print(
        f"httpx's own / aiohttp (runs): wall {theirs / ours:.2f}x, "
        f"CPU a request {theirs_cpu / ours_cpu:.2f}x"
    )


if __name__ == "__main__":
    main()
