"""The period pull as a beat entry of the database scheduler: every 15 minutes each ERP's period states are read
into the period calendar. An integration admin changes its interval or disables it in the beat admin (audited)."""

from django.db import migrations

NAME = "governance: pull accounting period states from the ERPs"
EVERY_SECONDS = 900


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        # A pull nobody ran within its interval is obsolete: the next one reads the same states.
        defaults={
            "task": "governance.tasks.accounting_periods_pull_task",
            "interval": interval,
            "queue": "housekeeping",
            "enabled": True,
            "expire_seconds": EVERY_SECONDS,
        },
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0003_accounting_period_erp_source"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
