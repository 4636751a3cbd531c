"""Fixtures of the insights tests: API keys with chosen scopes (as in the security tests), no KPI cache."""

from __future__ import annotations

import pytest

from integrationhub.tests.conftest import key_client, make_api_key

__all__ = ["key_client", "make_api_key"]


@pytest.fixture(autouse=True)
def kpis_uncached(settings):
    """Each test reads the figures of its own rows: no figures cached by an earlier test in the same minute."""
    settings.HUB_KPI_CACHE_SECONDS = 0
