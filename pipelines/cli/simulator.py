"""`simulate` and `demo`: the bundled Synthflow simulator, alone or driven end to end."""

import argparse
from pathlib import Path

from pipelines.cli.output import CommandError, stderr, stdout
from pipelines.cli.snapshot import run_snapshot_job

SIMULATED_KEY = "simulated-token"  # the one key `simulate` accepts: made up, printed for use


def cmd_simulate(args: argparse.Namespace) -> int:
    from pipelines.synthflow.simulator import demo_simulator

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port {args.port} is not a port; give 1-65535, or 0 for any free")
    simulator = demo_simulator(
        seed=args.seed,
        workspaces=args.workspaces,
        numbers_per_workspace=args.numbers,
        latency_s=args.latency_ms / 1000,
        page_size_cap=args.page_cap,
        requests_per_second=args.rate,
        api_key=SIMULATED_KEY,
    )
    ids = ",".join(simulator.workspace_ids())

    def ready(base_url: str) -> None:
        stderr.print(
            f"Synthflow simulator serving {base_url} (Ctrl-C stops it); it accepts the key "
            f"{SIMULATED_KEY} and answers 401 to any other. Point at it:"
        )
        stdout.print(
            f"export SYNTHFLOW_BASE_URL={base_url}\nexport SYNTHFLOW_WORKSPACES={ids}\n"
            f"export SYNTHFLOW_API_KEY={SIMULATED_KEY}",
            highlight=False,
            soft_wrap=True,  # whole lines, however many IDs: they are pasted into a shell
        )

    try:
        simulator.serve_forever(port=args.port, on_ready=ready)
    except OSError as error:
        raise CommandError(
            f"cannot serve on 127.0.0.1:{args.port} ({error.strerror}); pick another --port, "
            "or 0 for any free one"
        ) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(Path(args.database), run_snapshot_job, stdout, stderr)
