"""Running the web server, a Celery worker and beat together for `make run`, and stopping them together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class HubProcess:
    name: str
    argv: Sequence[str]


def hub_processes(*, bind: str, web_workers: int, worker_concurrency: int) -> list[HubProcess]:
    """The three processes of a running hub; the argv use this interpreter's environment."""
    bin_dir = os.path.dirname(sys.executable)
    queues = ",".join(settings.HUB_QUEUES)
    return [
        HubProcess(
            "web",
            [
                os.path.join(bin_dir, "gunicorn"),
                "integrationhub.wsgi",
                "--bind",
                bind,
                "--workers",
                str(web_workers),
                "--threads",
                "4",
                "--access-logfile",
                "-",
            ],
        ),
        HubProcess(
            "worker",
            [
                os.path.join(bin_dir, "celery"),
                "-A",
                "integrationhub",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                str(worker_concurrency),
                "--hostname",
                "worker@%h",
                "--loglevel",
                settings.LOG_LEVEL,
            ],
        ),
        HubProcess(
            "beat",
            [
                os.path.join(bin_dir, "celery"),
                "-A",
                "integrationhub",
                "beat",
                "--scheduler",
                settings.CELERY_BEAT_SCHEDULER,
                "--loglevel",
                settings.LOG_LEVEL,
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        ),
    ]


def run_together(processes: Sequence[HubProcess], *, write=print, grace_seconds: float = 15.0) -> int:  # type: ignore[no-untyped-def]
    """Start every process; when one exits or Ctrl-C / SIGTERM arrives, stop them all and return."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_code = 0
    try:
        for process in processes:
            # Own process groups so a terminal Ctrl-C reaches us once and we stop the children in order.
            children[process.name] = subprocess.Popen(list(process.argv), start_new_session=True)
            write(f"started {process.name} (pid {children[process.name].pid})")
        while not stopping:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    write(f"{name} exited with code {code}; stopping the others")
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.5)
    finally:
        write("stopping web, worker and beat ...")
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for name, child in children.items():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                write(f"{name} did not stop within {grace_seconds:g}s; killing it")
                child.kill()
                child.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        write("all stopped")
    return exit_code
