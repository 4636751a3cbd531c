"""The reconciliation's beat entry (database scheduler): this month's and last month's run of every legal entity
with routes, every hour; a run that could not read a system is thereby tried again an hour later."""

from django.db import migrations

NAME = "reconciliation: approved vs posted, this month and last"
TASK = "reconciliation.reconciliation_schedule_task"
EVERY_SECONDS = 3600


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=EVERY_SECONDS, period="seconds")
    PeriodicTask.objects.update_or_create(
        name=NAME,
        # A tick nobody ran within its interval is obsolete: the next one does the same work.
        defaults={
            "task": TASK,
            "interval": interval,
            "queue": "housekeeping",
            "enabled": True,
            "expire_seconds": EVERY_SECONDS,
        },
    )


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
