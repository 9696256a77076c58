"""`python -m bench [--size full|tiny] [--only ingest,profiles,…]`: run the suite, print the table, save JSON."""

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.harness import (
    FAILED,
    CpuBudget,
    Figure,
    RssSampler,
    budget_markdown,
    markdown,
    results_path,
    started_env,
    write_results,
)
from bench.scenarios import SCENARIOS, SIZES, failed, memory
from kernel.logging import configure_logging

console = Console(stderr=True)
RESULTS = Path(__file__).resolve().parent / "results"
Save = Callable[[list[Figure], list[CpuBudget]], None]


async def run_suite(size_name: str, only: list[str], progress: Progress, save: Save) -> tuple[list[Figure], list[CpuBudget]]:
    """Run the chosen scenarios in turn on one stack. A scenario that fails is a row saying why, and the
    next one runs; what is measured is saved after every scenario."""
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
                try:
                    figures += await SCENARIOS[name](env, size, partial(progress.advance, task))
                except Exception as exc:  # noqa: BLE001 - any failure is reported in the table, not raised
                    console.print_exception(max_frames=8)
                    figures.append(failed(name, exc))
                    with contextlib.suppress(Exception):
                        await env.settle(30)  # what the failure left behind must not weigh on the next scenario
                progress.update(task, completed=1.0)
                save(ordered(figures), env.budgets)
        finally:
            sampler.stop()
        budgets = env.budgets
    # Memory is sampled over the whole run, so it is measured last but listed in its place (6 of 7).
    return ordered(figures + memory(sampler)), budgets


def ordered(figures: list[Figure]) -> list[Figure]:
    return sorted(figures, key=lambda f: int(f.scenario.split(".")[0]))


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
    path = results_path(out, size)

    def save(figures: list[Figure], budgets: list[CpuBudget], finished: bool = False) -> None:
        write_results(path, figures, budgets, size, time.perf_counter() - started, finished)

    columns = (TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    # SIGTERM unwinds like Ctrl-C, so the stack the suite started is stopped, not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    with Progress(*columns, console=console) as progress:
        figures, budgets = asyncio.run(run_suite(size, chosen, progress, save))
    save(figures, budgets, finished=True)
    print(markdown(figures))
    if budgets:
        print("\nCPU per unit of work, each process of the run (µs):\n")
        print(budget_markdown(budgets))
    broken = [f for f in figures if f.metric == FAILED]
    console.print(f"\n{len(figures)} figures in {time.perf_counter() - started:.0f}s; saved {path}")
    if broken:
        console.print(f"[red]{len(broken)} scenario(s) failed: {', '.join(f.scenario for f in broken)}[/red]")
        raise typer.Exit(1)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    typer.run(main)
