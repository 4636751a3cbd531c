"""Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEY."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from connectors.services import field_keys_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt all encrypted columns with the first key in FIELD_ENCRYPTION_KEY. Put the new key first, "
        "keep the old ones after it, run this, then remove the old keys."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        counts = field_keys_rotate()
        self.stdout.write(
            f"Rows scanned: {counts['rows']}; secrets re-encrypted: {counts['rotated']}; empty values skipped: "
            f"{counts['empty']}."
        )
