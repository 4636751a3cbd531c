"""An explicit "all entities" flag on users' legal-entity scopes and on API keys, and the legal entity of an
audit event, so that a scope with no entities grants nothing.

Upgrade: before this migration a user with no scope row, or with a row listing no entities, saw every entity,
and a key with no legal entity reached as far as its owner. Those keep their meaning: each such user gets a scope
row with the flag, each such key the flag, and every grant is written to the audit log. Later, no entities means
none; only an integration admin sets the flag.
"""

from django.conf import settings
from django.db import migrations, models

UPGRADE_REASON = "kept on upgrade: an empty legal-entity scope used to mean every entity"


def keep_enterprise_wide_reach(apps, schema_editor):
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    scope_model = apps.get_model("integrationhub", "UserLegalEntityScope")
    api_key_model = apps.get_model("integrationhub", "ApiKey")
    audit_model = apps.get_model("integrationhub", "AuditEvent")
    events = []
    for scope in scope_model.objects.filter(all_entities=False, legal_entities__isnull=True).select_related("user"):
        scope.all_entities = True
        scope.save(update_fields=["all_entities"])
        events.append(("auth.user", scope.user_id, f"All legal entities kept for '{scope.user.username}'"))
    unscoped = user_model.objects.filter(is_active=True, is_superuser=False, legal_entity_scope__isnull=True)
    for user in unscoped:
        scope_model.objects.create(user=user, all_entities=True)
        events.append(("auth.user", user.pk, f"All legal entities kept for '{user.username}'"))
    for api_key in api_key_model.objects.filter(legal_entity__isnull=True, all_entities=False):
        api_key.all_entities = True
        api_key.save(update_fields=["all_entities"])
        events.append(("integrationhub.apikey", api_key.pk, f"All legal entities kept for API key {api_key.prefix}…"))
    audit_model.objects.bulk_create(
        audit_model(
            action="entity_scope.all_granted",
            object_type=object_type,
            object_id=str(object_id),
            summary=f"{summary} ({UPGRADE_REASON})"[:500],
            details={"field": "all_entities", "from": False, "to": True, "upgrade": True},
        )
        for object_type, object_id, summary in events
    )


class Migration(migrations.Migration):
    dependencies = [
        ("integrationhub", "0003_audit_user_agent_no_truncate"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="all_entities",
            field=models.BooleanField(
                default=False,
                help_text="Every legal entity its owner may see; only an integration admin can grant it (audited).",
            ),
        ),
        migrations.AlterField(
            model_name="apikey",
            name="legal_entity",
            field=models.ForeignKey(
                blank=True,
                help_text="Restricts the key to one legal entity's records (and never beyond its owner's entities).",
                null=True,
                on_delete=models.deletion.PROTECT,
                related_name="api_keys",
                to="governance.legalentity",
            ),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="legal_entity_id",
            field=models.IntegerField(
                blank=True,
                db_index=True,
                help_text="The legal entity of the record acted on; empty if none.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="userlegalentityscope",
            name="all_entities",
            field=models.BooleanField(
                default=False,
                help_text="Every legal entity, including records whose entity is unknown. Only integration admins "
                "grant it.",
            ),
        ),
        migrations.RunPython(keep_enterprise_wide_reach, migrations.RunPython.noop),
    ]
