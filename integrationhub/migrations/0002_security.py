"""API keys, the append-only audit log (with triggers refusing UPDATE and DELETE) and users' legal-entity scope."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

# Frozen copies of integrationhub.audit's trigger SQL: a migration must not change when the app code does.
POSTGRES_INSTALL = """
CREATE OR REPLACE FUNCTION integrationhub_auditevent_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'integrationhub_auditevent is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER integrationhub_auditevent_no_update BEFORE UPDATE ON integrationhub_auditevent
    FOR EACH ROW EXECUTE FUNCTION integrationhub_auditevent_refuse_change();
CREATE TRIGGER integrationhub_auditevent_no_delete BEFORE DELETE ON integrationhub_auditevent
    FOR EACH ROW EXECUTE FUNCTION integrationhub_auditevent_refuse_change();
"""
POSTGRES_REMOVE = """
DROP TRIGGER IF EXISTS integrationhub_auditevent_no_update ON integrationhub_auditevent;
DROP TRIGGER IF EXISTS integrationhub_auditevent_no_delete ON integrationhub_auditevent;
DROP FUNCTION IF EXISTS integrationhub_auditevent_refuse_change();
"""
SQLITE_INSTALL = [
    "CREATE TRIGGER IF NOT EXISTS integrationhub_auditevent_no_update BEFORE UPDATE ON integrationhub_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'integrationhub_auditevent is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS integrationhub_auditevent_no_delete BEFORE DELETE ON integrationhub_auditevent "
    "BEGIN SELECT RAISE(ABORT, 'integrationhub_auditevent is append-only: DELETE refused'); END",
]
SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS integrationhub_auditevent_no_update",
    "DROP TRIGGER IF EXISTS integrationhub_auditevent_no_delete",
]


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_INSTALL, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_INSTALL:
            schema_editor.execute(statement)


def remove_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_REMOVE, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_REMOVE:
            schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ('governance', '0001_initial'),
        ('integrationhub', '0001_role_groups'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('occurred_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('actor_id', models.IntegerField(blank=True, db_index=True, null=True)),
                ('actor_username', models.CharField(blank=True, db_index=True, max_length=150)),
                ('api_key_id', models.IntegerField(blank=True, null=True)),
                ('api_key_prefix', models.CharField(blank=True, max_length=8)),
                ('action', models.CharField(db_index=True, max_length=60)),
                ('object_type', models.CharField(blank=True, max_length=100)),
                ('object_id', models.CharField(blank=True, max_length=100)),
                ('summary', models.CharField(blank=True, max_length=500)),
                ('details', models.JSONField(blank=True, default=dict)),
                ('correlation_id', models.CharField(blank=True, max_length=64)),
                ('ip', models.GenericIPAddressField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-occurred_at', '-id'],
                'default_permissions': ('view',),
            },
        ),
        migrations.CreateModel(
            name='ApiKey',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(help_text="What the key is for, e.g. 'CRM webhook relay'.", max_length=100)),
                ('prefix', models.CharField(help_text="The key's first 8 characters, to recognise it.", max_length=8, unique=True)),
                ('hashed_key', models.CharField(editable=False, max_length=64, unique=True)),
                ('scopes', models.JSONField(default=list, help_text='Scopes such as config:read or messages:replay.')),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('expires_at', models.DateTimeField(blank=True, help_text='Empty: never expires.', null=True)),
                ('revoked_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('last_used_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('created_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('legal_entity', models.ForeignKey(blank=True, help_text="Restricts the key to one legal entity's records; empty for no restriction beyond the owner's.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name='api_keys', to='governance.legalentity')),
                ('owner', models.ForeignKey(help_text="The key acts as this user: the owner's role permissions apply on top of the scopes.", on_delete=django.db.models.deletion.PROTECT, related_name='api_keys', to=settings.AUTH_USER_MODEL)),
                ('revoked_by', models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'API key',
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='UserLegalEntityScope',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('legal_entities', models.ManyToManyField(blank=True, related_name='+', to='governance.legalentity')),
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='legal_entity_scope', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'user legal-entity scope',
            },
        ),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
