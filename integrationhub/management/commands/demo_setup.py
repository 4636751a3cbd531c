"""Load the demo data and create one demo user per role, then print the logins."""

from django.core.management.base import BaseCommand

from integrationhub.demo import demo_setup


class Command(BaseCommand):
    help = "Load the demo firm, the demo users and the five workflows' demo records; print the logins."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--firm-only",
            action="store_true",
            help="Only the firm and the users; do not seed the five workflows across the sandbox systems.",
        )

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        result = demo_setup(workflows=not options["firm_only"])
        for line in result.summary:
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS("Demo logins (user / password / role):"))
        for login in result.logins:
            self.stdout.write(f"  {login.username:<10} {login.password:<15} {login.role}")
