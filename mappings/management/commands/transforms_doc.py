"""Write docs/transforms.md from the transform registry."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from mappings.docs import transforms_markdown


class Command(BaseCommand):
    help = "Regenerate docs/transforms.md from the registered transforms."

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        target = Path(settings.BASE_DIR) / "docs" / "transforms.md"
        target.write_text(transforms_markdown())
        self.stdout.write(f"wrote {target}")
