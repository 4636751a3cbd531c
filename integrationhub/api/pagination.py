"""Pagination of every list endpoint: limit/offset with bounds, so no query string can ask the database
for more rows than a page or for an offset beyond the range of its integers."""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 2**62


class HubLimitOffsetPagination(LimitOffsetPagination):
    """`?limit=&offset=`: 50 by default, at most 1000 a page (a larger limit is read as 1000)."""

    max_limit = 1000

    def get_offset(self, request: Any) -> int:
        return min(super().get_offset(request), MAX_OFFSET)
