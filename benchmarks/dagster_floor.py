"""What does Dagster alone cost a run of many workspaces, on the instance users have?

A bare job of the snapshot step's shape (one partition a workspace, every partition in one
run, the same per-workspace check) reads nothing and stores nothing: its step only reports. It
runs as `synthflow-numbers snapshot` runs its job (`execute_in_process` on the instance of
DAGSTER_HOME holding the project's `dagster.yaml`), in a fresh process a round, each variant on
an instance of its own that a first run created (as a deployed instance exists before a run).
The time of a run of one partition is subtracted: what is left is what Dagster costs for the
workspaces' events alone, the floor under any run of that breadth.

Variants, from what per-workspace health needs down to nothing per workspace:
- `health`: planned, materialized and checked per workspace (what the product reports);
- `no-check`: planned and materialized (no per-workspace check verdicts);
- `one-plan`: materialized only, the run's plan one event for all its partitions
  (`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS`, at the price Dagster names: a failed
  run's partitions are then not marked failed).

    .venv/bin/python benchmarks/dagster_floor.py [--workspaces 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from snapshot_vs_dlt import child_env, measure  # noqa: E402

# The child: a job shaped like the snapshot step, whose step only reports.
CHILD = """
import sys, dagster as dg
partition_count, check = int(sys.argv[1]), sys.argv[2] == "1"
partitions = dg.StaticPartitionsDefinition([f"ws{i:05d}" for i in range(partition_count)])
KEY = dg.AssetKey(["synthflow", "number_snapshots"])
CHECK = "workspace_passes_checks"

@dg.multi_asset(
    specs=[dg.AssetSpec(KEY, partitions_def=partitions, skippable=True)],
    can_subset=True,
    check_specs=[dg.AssetCheckSpec(CHECK, asset=KEY, partitions_def=partitions)] if check else [],
)
def step(context: dg.AssetExecutionContext):
    for key in context.partition_keys:
        yield dg.AssetMaterialization(
            KEY, partition=key, metadata={"numbers": 10, "dagster/partition_row_count": 10}
        )
    if check:
        for key in context.partition_keys:
            yield dg.AssetCheckEvaluation(
                asset_key=KEY, check_name=CHECK, partition=key, passed=True,
                metadata={"failing_rows": 0},
            )

defs = dg.Definitions(assets=[step], executor=dg.in_process_executor)
job = defs.resolve_implicit_global_asset_job_def()
keys = partitions.get_partition_keys()
with dg.DagsterInstance.get() as instance:
    result = job.execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": keys[0],
              "dagster/asset_partition_range_end": keys[-1]},
    )
sys.exit(0 if result.success else 1)
"""

VARIANTS = {
    "health": {"check": True, "env": {}},
    "no-check": {"check": False, "env": {}},
    "one-plan": {
        "check": False,
        "env": {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"},
    },
}


def run_child(env: dict[str, str], partitions: int, check: bool, log: Path) -> float:
    """Wall seconds of one child, on the instance of `env`'s DAGSTER_HOME."""
    command = [sys.executable, "-c", CHILD, str(partitions), "1" if check else "0"]
    return measure(command, env, log)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dagster-floor-"))
    try:
        # An instance a variant (the project's dagster.yaml), created by a first run; "one" is
        # health's job with one partition.
        envs = {}
        for name in ("one", *VARIANTS):
            variant = VARIANTS.get(name, VARIANTS["health"])
            (work / name).mkdir()
            envs[name] = child_env(work / name) | variant["env"]
            run_child(envs[name], 1, variant["check"], work / "log")
        print(f"{args.workspaces} workspaces, {args.rounds} rounds alternated, medians", flush=True)
        times: dict[str, list[float]] = {"one": []} | {name: [] for name in VARIANTS}
        for round_number in range(1, args.rounds + 1):
            times["one"].append(run_child(envs["one"], 1, True, work / "log"))
            for name, variant in VARIANTS.items():
                times[name].append(
                    run_child(envs[name], args.workspaces, variant["check"], work / "log")
                )
            print(
                f"round {round_number}: "
                + ", ".join(f"{name} {seconds[-1]:.2f} s" for name, seconds in times.items()),
                flush=True,
            )
        one = statistics.median(times["one"])
        print(f"\none workspace (start-up of the bare job): {one:.2f} s")
        print(f"{'variant':10} {'run s':>8} {'less one s':>11} {'ms a workspace':>15}")
        for name in VARIANTS:
            total = statistics.median(times[name])
            extra = total - one
            print(f"{name:10} {total:8.2f} {extra:11.2f} {extra / args.workspaces * 1000:15.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
