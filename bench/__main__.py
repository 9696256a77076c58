"""`python -m bench [--size full|tiny] [--only ingest,profiles,…]`: run the suite, print the table, save JSON."""

import asyncio
import signal
import time
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.harness import Figure, RssSampler, markdown, started_env, write_results
from bench.scenarios import SCENARIOS, SIZES, memory
from kernel.logging import configure_logging

console = Console(stderr=True)
RESULTS = Path(__file__).resolve().parent / "results"


async def run_suite(size_name: str, only: list[str], progress: Progress) -> list[Figure]:
    size = SIZES[size_name]
    figures: list[Figure] = []
    setup = progress.add_task("starting the stack", total=1)
    async with started_env() as env:
        progress.update(setup, completed=1)
        sampler = RssSampler({name: proc.pid for name, proc in env.stack.procs.items()})
        sampler.start()
        try:
            for name in only:
                task = progress.add_task(name, total=1.0)
                figures += await SCENARIOS[name](env, size, partial(progress.advance, task))
                progress.update(task, completed=1.0)
        finally:
            sampler.stop()
    # Memory is sampled over the whole run, so it is measured last but listed in its place (6 of 7).
    return sorted(figures + memory(sampler), key=lambda f: int(f.scenario.split(".")[0]))


def main(
    size: Annotated[str, typer.Option(help="full (about 10 minutes on 2 cores) or tiny (a smoke run)")] = "full",
    only: Annotated[str, typer.Option(help="comma-separated scenarios: " + ",".join(SCENARIOS))] = ",".join(SCENARIOS),
    out: Annotated[Path, typer.Option(help="where the JSON results go")] = RESULTS,
) -> None:
    """Run Herald's benchmark suite against a fresh embedded stack."""
    # Logs (the bus's connection lines, say) go to stderr: stdout is the table.
    configure_logging("bench", "console", "WARNING")
    if size not in SIZES:
        raise typer.BadParameter(f"one of {', '.join(SIZES)}", param_hint="--size")
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(sorted(unknown))}; one of {', '.join(SCENARIOS)}", param_hint="--only")
    started = time.perf_counter()
    columns = (TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    # SIGTERM unwinds like Ctrl-C, so the stack the suite started is stopped, not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    with Progress(*columns, console=console) as progress:
        figures = asyncio.run(run_suite(size, chosen, progress))
    seconds = time.perf_counter() - started
    path = write_results(figures, size, out, seconds)
    print(markdown(figures))
    console.print(f"\n{len(figures)} figures in {seconds:.0f}s; saved {path}")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    typer.run(main)
