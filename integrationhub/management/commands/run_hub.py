"""Start web, worker and beat together; Ctrl-C stops all three."""

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from integrationhub.demo import demo_addresses_follow, demo_public_url
from integrationhub.processes import hub_processes, run_together


class Command(BaseCommand):
    help = "Run the web server (gunicorn), a Celery worker and Celery beat together until Ctrl-C."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--worker-concurrency", type=int, default=2)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        # The demo's sandbox systems and webhook targets follow the address the hub is served on.
        public_url = demo_public_url(bind=options["bind"])
        try:
            changed = demo_addresses_follow(base_url=public_url)
        except DatabaseError as exc:
            self.stderr.write(f"Demo addresses not checked ({exc}); run `manage.py migrate` first.")
        else:
            if changed:
                self.stdout.write(f"Demo systems now call the hub at {public_url}: {', '.join(changed)}")
        processes = hub_processes(
            bind=options["bind"], web_workers=options["web_workers"], worker_concurrency=options["worker_concurrency"]
        )
        self.stdout.write(self.style.SUCCESS(f"Integration Hub: http://{options['bind']}/admin/  (Ctrl-C stops)"))
        code = run_together(processes, write=lambda line: self.stdout.write(line))
        if code:
            raise SystemExit(code)
