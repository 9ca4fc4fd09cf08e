"""`python -m pipelines.cli`: the `synthflow-numbers` command."""

from pipelines.cli import run

run()
