"""`python -m tests.bench` (what `make bench` runs): print the benchmark table.

The benchmarks live with the tests, not in the runtime package: they start real
servers through the test launcher and are not something a deployment needs.
"""

from __future__ import annotations

import os
import tempfile

import click

from tests.bench.run import BENCHMARKS, run_benchmarks


@click.command()
@click.option("--quick", is_flag=True, help="Smaller workloads, for a smoke run.")
@click.option(
    "--only",
    type=click.Choice(BENCHMARKS),
    multiple=True,
    help="Run only this group (repeatable); default: all of them.",
)
def bench(quick: bool, only: tuple[str, ...]) -> None:
    """Measure appends, replay, fan-out and memory against real servers; print a table."""
    # Every process the benchmarks start keeps its per-user config (which `steplog
    # serve` writes) away from the user's own `~/.config/steplog`.
    with tempfile.TemporaryDirectory(prefix="steplog-bench-config-") as home:
        os.environ["XDG_CONFIG_HOME"] = home
        click.echo(run_benchmarks(quick=quick, only=frozenset(only or BENCHMARKS)))


bench()
