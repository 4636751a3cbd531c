"""Settings of the test suite (pyproject's DJANGO_SETTINGS_MODULE): the product's settings, run as a throwaway
deployment.

With DEBUG off and DATABASE_URL set the hub refuses to start without real SECRET_KEY and FIELD_ENCRYPTION_KEY
(integrationhub.production_keys), and the suite runs just so on PostgreSQL, as do the worker, gunicorn and manage.py
processes the tests start (on the embedded run too, with a sqlite:/// DATABASE_URL). Random keys made once per run
are real keys for data that is thrown away; they go into the environment, before the settings load, so every
process the tests start inherits the same ones. Keys already in the environment are kept.
"""

import os

from integrationhub.env import throwaway_keys_setdefault

throwaway_keys_setdefault(os.environ)

from integrationhub.settings import *  # noqa: E402, F403
