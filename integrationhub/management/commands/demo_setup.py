"""Load the demo data and create one demo user per role, then print the logins."""

from django.core.management.base import BaseCommand

from integrationhub.demo import demo_setup


class Command(BaseCommand):
    help = "Load the demo firm (legal entities, systems, rate cards, policies) and the demo users; print logins."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        result = demo_setup()
        for line in result.summary:
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS("Demo logins (user / password / role):"))
        for login in result.logins:
            self.stdout.write(f"  {login.username:<10} {login.password:<15} {login.role}")
