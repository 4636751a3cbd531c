"""manage.py two_factor_reset --user NAME --reason TEXT: remove a user's authenticator (audited)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from integrationhub.twofactor import two_factor_reset


class Command(BaseCommand):
    help = "Reset a user's two-factor login (lost phone); their next login asks them to set it up again if required."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--user", required=True, help="The username whose authenticator is removed.")
        parser.add_argument("--reason", required=True, help="Why, for the audit log.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user is called {options['user']!r}.")
        removed = two_factor_reset(user=user, reason=options["reason"])
        self.stdout.write(f"Removed {removed} authenticator(s) of '{user.get_username()}'.")
