"""The audit event's user agent, and a statement trigger on PostgreSQL that refuses TRUNCATE of the audit table
(row triggers, which refuse UPDATE and DELETE, do not see a TRUNCATE)."""

from django.db import migrations, models

# Frozen copies of the SQL (a migration must not change when the app code does). The function is the one
# migration 0002 installed; TG_OP names the refused statement.
POSTGRES_INSTALL = """
CREATE TRIGGER integrationhub_auditevent_no_truncate BEFORE TRUNCATE ON integrationhub_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION integrationhub_auditevent_refuse_change();
"""
POSTGRES_REMOVE = "DROP TRIGGER IF EXISTS integrationhub_auditevent_no_truncate ON integrationhub_auditevent;"
# SQLite adds the column by rebuilding the table, which drops its triggers: put them back.
SQLITE_INSTALL = [
    "CREATE TRIGGER IF NOT EXISTS integrationhub_auditevent_no_update BEFORE UPDATE ON integrationhub_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'integrationhub_auditevent is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS integrationhub_auditevent_no_delete BEFORE DELETE ON integrationhub_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'integrationhub_auditevent is append-only: DELETE refused'); END",
]


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_INSTALL, params=None)
    elif vendor == "sqlite":
        # SQLite has no TRUNCATE; its DELETE trigger already refuses emptying the table.
        for statement in SQLITE_INSTALL:
            schema_editor.execute(statement)


def remove_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_REMOVE, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('integrationhub', '0002_security'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='user_agent',
            field=models.CharField(blank=True, help_text="The client's User-Agent header, if any.", max_length=300),
        ),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
