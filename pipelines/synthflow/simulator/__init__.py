"""A loopback HTTP server that imitates Synthflow's `GET /v2/numbers`, faults included.

The shared test double of the project: tests, the demo and `synthflow-numbers simulate` point
a real HTTP client at it. It follows `synthflow-api.md` (routes, query parameters, the success
envelope, the 400/401/404/422 bodies) and never imports the project's client code.

Contract:
- `GET /v2/numbers?workspace=&limit=&offset=&is_available=` answers pages of the workspace's
  listing in an order that is stable while nothing changes; `total_records` counts after the
  `is_available` filter; serving a page costs O(page size), not O(workspace size).
- Checks run in this order: server-side rate budget (429 + Retry-After), path (404),
  `Authorization` present (401), query parameters (422), workspace known and key accepted
  (400 / 401), then switched-on faults, then the page. Tokens never appear in a body or log,
  with one exception: the "echo_key" fault echoes the Authorization header in its error
  description, so that tests can check the client strips it before showing or logging it.
- Every answer carries `X-Request-Id`; error bodies carry the same ID.
- State changes and fault switches are thread-safe; sleeps (latency, "slow", "trickle") happen
  outside the lock so concurrent requests overlap.
- Faults (`FAULT_KINDS`) are switched on for the next N page requests with `fail_next` or for
  every request of a workspace with `break_workspace`. A "trickle" answer stops within one
  `trickle_interval_s` of `stop()` and within about two of the client hanging up.

Where each thing is decided: `control` (the `Simulator` and the order of the checks), `api`
(route, keys, query validation, bodies), `faults` (switches and hostile answers), `state`
(workspaces, paging, churn), `numbers` (seeded data), `traffic` (stats, rate budget),
`server` (HTTP, how an answer is written, start and stop); here, `demo_simulator`: one seeded
with workspaces whose IDs look like Synthflow's.
"""

import random
from typing import Any

from pipelines.synthflow.simulator.control import Simulator
from pipelines.synthflow.simulator.faults import FAULT_KINDS
from pipelines.synthflow.simulator.numbers import PhoneNumber, make_workspace_id
from pipelines.synthflow.simulator.traffic import SimulatorStats

__all__ = ["FAULT_KINDS", "PhoneNumber", "Simulator", "SimulatorStats", "demo_simulator"]


def demo_simulator(
    *,
    seed: int = 0,
    workspaces: int = 3,
    numbers_per_workspace: int = 40,
    api_key: str | None = None,
    **settings: Any,
) -> Simulator:
    """A simulator with `workspaces` seeded workspaces whose IDs look like Synthflow's; with
    `api_key`, every workspace accepts that key alone (401 for any other)."""
    id_rng = random.Random(f"workspace-ids:{seed}")  # its own stream: IDs do not shift numbers
    ids = [make_workspace_id(id_rng) for _ in range(workspaces)]
    keys = dict.fromkeys(ids, api_key) if api_key is not None else None
    simulator = Simulator(seed=seed, api_keys=keys, **settings)
    for workspace_id in ids:
        simulator.add_workspace(workspace_id, numbers_per_workspace)
    return simulator
