"""Start web, worker and beat together; Ctrl-C stops all three."""

from django.core.management.base import BaseCommand

from integrationhub.processes import hub_processes, run_together


class Command(BaseCommand):
    help = "Run the web server (gunicorn), a Celery worker and Celery beat together until Ctrl-C."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--worker-concurrency", type=int, default=2)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        processes = hub_processes(
            bind=options["bind"], web_workers=options["web_workers"], worker_concurrency=options["worker_concurrency"]
        )
        self.stdout.write(self.style.SUCCESS(f"Integration Hub: http://{options['bind']}/admin/  (Ctrl-C stops)"))
        code = run_together(processes, write=lambda line: self.stdout.write(line))
        if code:
            raise SystemExit(code)
