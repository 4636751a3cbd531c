"""Deploy checks of the hub's own settings (run by `manage.py check --deploy`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register

from integrationhub.production_keys import EMBEDDED_SECRET_KEY


@register(Tags.security, deploy=True)
def check_secret_key_is_not_the_embedded_default(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    # Django's W009 only judges a key's length and variety; the embedded default passes both.
    if settings.SECRET_KEY == EMBEDDED_SECRET_KEY:
        return [
            Warning(
                "SECRET_KEY is the embedded development default, which is public.",
                hint="Set SECRET_KEY to 50 or more random characters in production.",
                id="integrationhub.W001",
            )
        ]
    return []
