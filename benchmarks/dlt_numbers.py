"""The dlt side of the benchmark: the same listings through dlt's REST API source into DuckDB.

A `rest_api` source with one resource per workspace, all writing to one table `numbers`
(workspace_id added by a map step), an offset paginator that stops at `total_records`,
`write_disposition` merge with the scd2 strategy, primary key (workspace_id, number), and
parallel extraction switched on (`parallelized=True`; the thread pool size is `--workers`,
set by the caller to the project's `fetch.concurrency`, so both keep as many requests in
flight) and parallel normalization (a process per core). A parametrized form (a parent
`workspaces` resource, the listing resolved from it as a child) was tried: dlt then reads
the workspaces one after another, 3x slower here.
dlt's offset paginator advances by the limit asked for, so `--page-size` must not exceed
what the server answers (the benchmark passes the server's page cap).

Run by `snapshot_vs_dlt.py` as a subprocess, so its wall time and peak RSS are its own:

    python benchmarks/dlt_numbers.py --base-url URL --workspaces-file FILE --page-size 100 \
        --workers 16 --database /tmp/x/dlt.duckdb --pipelines-dir /tmp/x/dlt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _configure_dlt(workers: int, normalize_workers: int) -> None:
    """dlt reads its settings from the environment; set them before importing dlt.

    Besides parallel extraction, normalization runs in a process per core over files of
    25,000 rows (dlt's performance guide): 2.0x faster on 1,000,000 numbers here (166 s to
    82 s) and 1.4x on 100,000; with one file per run dlt normalizes on one core.
    """
    settings = {
        "EXTRACT__WORKERS": str(workers),
        "EXTRACT__MAX_PARALLEL_ITEMS": str(max(20, workers * 2)),
        "NORMALIZE__WORKERS": str(normalize_workers),
        "DATA_WRITER__FILE_MAX_ITEMS": "25000",
        "LOAD__WORKERS": "4",
        "RUNTIME__LOG_LEVEL": "WARNING",
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "PROGRESS": "none",
    }
    for name, value in settings.items():
        os.environ.setdefault(name, value)


def _with_workspace(workspace_id: str):
    def add(item: dict) -> dict:
        item["workspace_id"] = workspace_id
        return item

    return add


def run(args: argparse.Namespace) -> int:
    _configure_dlt(args.workers, args.normalize_workers)
    # dlt nests a generator per resource when it builds the source: at 1,000 resources that
    # passes Python's default recursion limit of 1,000.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    import dlt
    from dlt.sources.rest_api import rest_api_source

    workspace_ids = Path(args.workspaces_file).read_text().split(",")
    config = {
        "client": {
            "base_url": args.base_url.rstrip("/") + "/",
            "auth": {"type": "bearer", "token": args.api_key},
            "paginator": {
                "type": "offset",
                "limit": args.page_size,
                "offset_param": "offset",
                "limit_param": "limit",
                "total_path": "response.pagination.total_records",
            },
        },
        "resource_defaults": {
            "primary_key": ["workspace_id", "number"],
            "write_disposition": {"disposition": "merge", "strategy": "scd2"},
            "table_name": "numbers",
            "endpoint": {"data_selector": "response.phone_numbers"},
        },
        "resources": [
            {
                "name": f"workspace_{index}",
                "endpoint": {"path": "numbers", "params": {"workspace": workspace_id}},
                "processing_steps": [{"map": _with_workspace(workspace_id)}],
            }
            for index, workspace_id in enumerate(workspace_ids)
        ],
    }
    source = rest_api_source(config, name="synthflow", parallelized=True)
    pipeline = dlt.pipeline(
        pipeline_name="synthflow_numbers_dlt",
        pipelines_dir=args.pipelines_dir,
        destination=dlt.destinations.duckdb(args.database),
        dataset_name="synthflow_dlt",
        progress="log" if args.verbose else None,
    )
    info = pipeline.run(source)
    if args.verbose:
        print(info, file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--workspaces-file", required=True, help="comma-separated workspace IDs")
    parser.add_argument("--api-key", default="made-up-benchmark-token")
    parser.add_argument("--page-size", type=int, required=True)
    parser.add_argument("--workers", type=int, default=5, help="dlt extract thread pool size")
    parser.add_argument("--normalize-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--database", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--verbose", action="store_true")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
