"""The exception-queue tests build their flows with the sync engine's fixtures."""

from sync.tests.conftest import make_flow, target  # noqa: F401 - fixtures re-exported for this folder
