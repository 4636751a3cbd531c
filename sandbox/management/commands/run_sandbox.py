"""Serve only the sandbox systems in their own gunicorn, so benchmarks do not share the hub's web workers."""

from __future__ import annotations

import os
import sys

from django.core.management.base import BaseCommand

STANDALONE_SETTINGS = "sandbox.standalone_settings"


def sandbox_server_argv(*, host: str, port: int, workers: int, threads: int) -> list[str]:
    """gunicorn serving the hub's WSGI app; the standalone settings give it a sandbox-only URLconf."""
    return [
        os.path.join(os.path.dirname(sys.executable), "gunicorn"),
        "integrationhub.wsgi",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        # The timeout fault sleeps inside a request; let it sleep far longer than any client waits.
        "--timeout",
        "300",
        "--access-logfile",
        "-",
    ]


class Command(BaseCommand):
    help = "Serve the sandbox CRM, PSA, collaboration and ERP (only /sandbox/...) with gunicorn until Ctrl-C."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--threads", type=int, default=8)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        argv = sandbox_server_argv(
            host=options["host"], port=options["port"], workers=options["workers"], threads=options["threads"]
        )
        base = f"http://{options['host']}:{options['port']}/sandbox"
        self.stdout.write(self.style.SUCCESS(f"Sandbox systems at {base}/{{crm,psa,collab,erp}}/  (Ctrl-C stops)"))
        self.stdout.flush()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": STANDALONE_SETTINGS}
        # exec: gunicorn takes this process's place, so Ctrl-C and SIGTERM reach it directly.
        os.execve(argv[0], argv, env)  # noqa: S606 - our own argv
