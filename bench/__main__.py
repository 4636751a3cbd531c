"""Run benchmarks: `python -m bench mapping` (or `make bench`); options (`--memory`) go to the benchmarks."""

from __future__ import annotations

import sys

BENCHMARKS = {
    "events": "bench.events",  # P1
    "batch": "bench.batch",  # P2
    "mapping": "bench.mapping",  # P3
    "tryton": "bench.tryton_posting",  # P4
    "dashboard": "bench.dashboard",  # P5
}


def main(argv: list[str]) -> int:
    names = [arg for arg in argv if not arg.startswith("--")] or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    import importlib
    import os

    from integrationhub.env import throwaway_keys_setdefault

    # A benchmark stack is a throwaway deployment on PostgreSQL with DEBUG off: without keys the hub would refuse
    # to start. Random ones, in the environment so the servers and workers a benchmark starts share them.
    throwaway_keys_setdefault(os.environ)
    failed = 0
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        failed += 0 if module.main() else 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
