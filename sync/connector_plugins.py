"""Connector types the sync app adds to the registry (imported by ConnectorsConfig.ready() before it freezes).

Only the test target connector so far, and only in a test run: pytest in this process, or a worker the
test suite started with HUB_TEST_CONNECTORS=1. Production never registers it.
"""

import os
import sys

if os.environ.get("HUB_TEST_CONNECTORS") == "1" or "pytest" in sys.modules:
    from sync.tests import target_connector  # noqa: F401
