"""Create an API key from the command line; the key is printed once (on stdout, alone, for scripts)."""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from governance.models import LegalEntity
from integrationhub.apikeys import api_key_create
from integrationhub.errors import HubError
from integrationhub.scopes import ALL_SCOPES


class Command(BaseCommand):
    help = "Create an API key acting as --owner with the given scopes and print it (it is not shown again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="What the key is for.")
        parser.add_argument("--owner", required=True, help="Username the key acts as.")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            default=[],
            help=f"Repeat for each scope; 'all' for every scope. Known: {', '.join(ALL_SCOPES)}.",
        )
        parser.add_argument("--legal-entity", help="Legal entity code to restrict the key to.")
        parser.add_argument(
            "--all-entities",
            action="store_true",
            help="Every legal entity the owner may see (the owner must be an integration admin or a superuser). "
            "Without it or --legal-entity the key reads no entity's operational data.",
        )
        parser.add_argument("--expires-in-days", type=int, help="Days until the key expires (default: never).")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            owner = user_model.objects.get(**{user_model.USERNAME_FIELD: options["owner"]})
        except user_model.DoesNotExist:
            raise CommandError(f"No user {options['owner']!r}; create it first.") from None
        scopes = list(ALL_SCOPES) if "all" in options["scopes"] else options["scopes"]
        legal_entity = None
        if options.get("legal_entity"):
            legal_entity = LegalEntity.objects.filter(code=options["legal_entity"]).first()
            if legal_entity is None:
                raise CommandError(f"No legal entity with code {options['legal_entity']!r}.")
        expires_at = None
        if options.get("expires_in_days") is not None:
            expires_at = timezone.now() + datetime.timedelta(days=options["expires_in_days"])
        try:
            created = api_key_create(
                name=options["name"],
                owner=owner,
                scopes=scopes,
                created_by=owner,
                legal_entity=legal_entity,
                all_entities=options.get("all_entities", False),
                expires_at=expires_at,
            )
        except HubError as error:
            raise CommandError(error.detail) from None
        self.stderr.write(
            f"Created API key {created.api_key.prefix}… '{created.api_key.name}' for {owner} "
            f"with {', '.join(created.api_key.scopes)}. Store the key now: it is not shown again."
        )
        self.stdout.write(created.key)
