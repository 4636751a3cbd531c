"""WSGI entry point for gunicorn: Django, with inbound webhooks answered in front of it (sync.api.inbound)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")

django_application = get_wsgi_application()

# Imported after Django is set up: the module reads the models and settings.
from sync.api.inbound import InboundWebhookApplication  # noqa: E402

application = InboundWebhookApplication(django_application)
