"""Shared helpers for the benchmarks: Django setup, timing, and appending results to bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    import django

    django.setup()


def best_rate(run: Callable[[], int], *, repeats: int = 5) -> tuple[float, list[float]]:
    """Run `run` (which returns how many records it handled) several times; best and all rates in records/s."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - started))
    return max(rates), rates


def interleaved_best(runs: dict[str, Callable[[], int]], *, repeats: int = 5) -> dict[str, float]:
    """Best rate per contender, taking turns so that machine noise hits every contender alike."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            count = run()
            rates[name].append(count / (time.perf_counter() - started))
    return {name: max(values) for name, values in rates.items()} | {
        f"{name}_median": statistics.median(values) for name, values in rates.items()
    }


def record_result(benchmark: str, lines: list[str]) -> None:
    """Append a dated section to bench/RESULTS.md."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    header = "# Benchmark results\n\nEvery figure is a ratio against a baseline measured in the same run.\n"
    if not RESULTS.exists():
        RESULTS.write_text(header)
    with RESULTS.open("a") as out:
        out.write(f"\n## {benchmark}: {stamp} ({machine})\n\n")
        for line in lines:
            out.write(f"- {line}\n")
