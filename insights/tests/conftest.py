"""Fixtures of the insights tests: API keys with chosen scopes (as in the security tests)."""

from __future__ import annotations

from integrationhub.tests.conftest import key_client, make_api_key

__all__ = ["key_client", "make_api_key"]
