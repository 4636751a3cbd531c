"""The alert run as a beat entry of the database scheduler (every minute)."""

from django.db import migrations

SCHEDULES = [
    ("exception alerts: evaluate rules and send", "alerts.alerts_run_task", 60),
]


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds in SCHEDULES:
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=name,
            # A run nobody started within its interval is obsolete: the next one does the same work.
            defaults={"task": task, "interval": interval, "queue": "housekeeping", "enabled": True, "expire_seconds": seconds},
        )


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_alert_rules_and_alerts"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
