"""Settings of the standalone sandbox server (`manage.py run_sandbox`): the hub's settings, sandbox URLs only.

Same database, cache and broker as the hub, so the sandbox's records, fault counters and webhook tasks are
shared; only the URLconf differs, so benchmarks hit the sandbox without sharing the hub's web workers.
"""

from integrationhub.settings import *  # noqa: F403

ROOT_URLCONF = "sandbox.standalone_urls"
