"""Django's flush, which on SQLite lifts the audit table's append-only triggers while it empties the database.

Flush is the one sanctioned way to delete audit rows (a whole-database reset, which the test runner does
after each transactional test). PostgreSQL's flush uses TRUNCATE, which row triggers do not see; SQLite's
uses DELETE, which they refuse, so the triggers are dropped and put back around it.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands.flush import Command as FlushCommand
from django.db import DEFAULT_DB_ALIAS, connections

from integrationhub.audit import SQLITE_TRIGGERS


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options.get("database") or DEFAULT_DB_ALIAS]
        if connection.vendor != "sqlite":
            super().handle(**options)
            return
        with connection.cursor() as cursor:
            for name in SQLITE_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {name}")
        try:
            super().handle(**options)
        finally:
            if "integrationhub_auditevent" in connection.introspection.table_names():
                with connection.cursor() as cursor:
                    for statement in SQLITE_TRIGGERS.values():
                        cursor.execute(statement)
