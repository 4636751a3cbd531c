"""The dispatcher (every second) and the sweeper (every 15 s) as beat entries of the database scheduler."""

from django.db import migrations

SCHEDULES = [
    ("sync: dispatch stored messages and due deliveries", "sync.sync_tick_task", 1),
    ("sync: sweep messages and deliveries a lost task left behind", "sync.sync_sweep_task", 15),
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
        ("sync", "0002_engine"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
