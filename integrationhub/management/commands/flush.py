"""Django's flush, which lifts the audit table's append-only triggers while it empties the database.

Flush is the one sanctioned way to delete audit rows (a whole-database reset, which the test runner does
after each transactional test). PostgreSQL's flush uses TRUNCATE, which a statement trigger refuses: it is
disabled for the flush (ALTER TABLE, which only the table's owner may run) and enabled again after. SQLite's
flush uses DELETE, which its row triggers refuse, so they are dropped and put back around it.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands.flush import Command as FlushCommand
from django.db import DEFAULT_DB_ALIAS, connections

from integrationhub.audit import POSTGRES_TRUNCATE_TRIGGER, SQLITE_TRIGGERS

AUDIT_TABLE = "integrationhub_auditevent"


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options.get("database") or DEFAULT_DB_ALIAS]
        if connection.vendor == "postgresql":
            self._flush_postgresql(connection, **options)
            return
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

    def _flush_postgresql(self, connection: Any, **options: Any) -> None:
        guarded = AUDIT_TABLE in connection.introspection.table_names() and _trigger_exists(connection)
        if guarded:
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {AUDIT_TABLE} DISABLE TRIGGER {POSTGRES_TRUNCATE_TRIGGER}")
        try:
            super().handle(**options)
        finally:
            if guarded:
                with connection.cursor() as cursor:
                    cursor.execute(f"ALTER TABLE {AUDIT_TABLE} ENABLE TRIGGER {POSTGRES_TRUNCATE_TRIGGER}")


def _trigger_exists(connection: Any) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = %s::regclass",
            [POSTGRES_TRUNCATE_TRIGGER, AUDIT_TABLE],
        )
        return cursor.fetchone() is not None
