"""The time and expense sender as a beat entry of the database scheduler (every 2 s)."""

from django.db import migrations

SCHEDULES = [
    ("time and expense: send due ERP lines", "workflows.time_expense_postings_dispatch_task", 2),
]


def install(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, seconds in SCHEDULES:
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=name,
            # A tick nobody ran within its interval is obsolete: the next one does the same work.
            defaults={
                "task": task,
                "interval": interval,
                "queue": "housekeeping",
                "enabled": True,
                "expire_seconds": max(5, seconds),
            },
        )


def remove(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, _, _ in SCHEDULES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0002_time_expense_posting_ledger"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
