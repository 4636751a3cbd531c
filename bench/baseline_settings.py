"""Settings of the events benchmark's baseline: a bare Django view that INSERTs one row per request.

Used only by `python -m bench events`; never part of the product's URLs. BENCH_BASELINE_DATABASE_URL names the
PostgreSQL database the benchmark created for it.
"""

import os

import dj_database_url

SECRET_KEY = "bench-baseline-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.baseline_urls"
# The same connection settings as the hub's (integrationhub.env.database_config).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ["BENCH_BASELINE_DATABASE_URL"], conn_max_age=60, conn_health_checks=True
    )
}
USE_TZ = True
TIME_ZONE = "UTC"
