"""The deprecation mechanism of the versioned API: `Deprecation`, `Sunset` and `Link` headers (RFC 9745, 8594).

    @deprecated(sunset=datetime.date(2027, 6, 30), link="https://docs.example/api#v2-rate-cards")
    class RateCardV1ViewSet(...): ...        # or on one action method, or on a function view

Every response of a deprecated endpoint then says since when it is deprecated, the day it goes away and
where to read about the replacement; the OpenAPI schema marks DRF operations `deprecated: true`.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from email.utils import format_datetime
from typing import Any, TypeVar

from drf_spectacular.utils import extend_schema

Target = TypeVar("Target", bound=Callable[..., Any])


def deprecation_headers(
    *, sunset: datetime.date, deprecated_on: datetime.date | None = None, link: str = ""
) -> dict[str, str]:
    """The headers of a deprecated endpoint. Deprecation is a structured date (`@<unix seconds>`), Sunset an
    HTTP-date, Link the documentation of the replacement."""
    since = deprecated_on or datetime.date.today()
    since_at = datetime.datetime.combine(since, datetime.time(), tzinfo=datetime.UTC)
    # The endpoint may go away once the sunset day is over: the Sunset instant is the start of the next day.
    sunset_at = datetime.datetime.combine(sunset, datetime.time(), tzinfo=datetime.UTC) + datetime.timedelta(days=1)
    headers = {
        "Deprecation": f"@{int(since_at.timestamp())}",
        "Sunset": format_datetime(sunset_at, usegmt=True),
    }
    if link:
        headers["Link"] = f'<{link}>; rel="deprecation"; type="text/html"'
    return headers


def _add_headers(response: Any, headers: dict[str, str]) -> Any:
    for name, value in headers.items():
        if name == "Link" and response.has_header("Link"):
            response["Link"] = f"{response['Link']}, {value}"
        elif not response.has_header(name):
            response[name] = value
    return response


def deprecated(*, sunset: datetime.date, link: str = "", deprecated_on: datetime.date | None = None) -> Callable:
    """Mark a view class, a viewset action or a function view as deprecated (see the module docstring)."""
    since = deprecated_on or datetime.date.today()

    def decorate(target: Target) -> Target:
        headers = deprecation_headers(sunset=sunset, deprecated_on=since, link=link)
        if isinstance(target, type):
            view_class: Any = target
            original = view_class.dispatch

            @functools.wraps(original)
            def dispatch(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
                return _add_headers(original(self, request, *args, **kwargs), headers)

            view_class.dispatch = dispatch
            if hasattr(view_class, "schema"):  # a DRF view: mark its operations in the OpenAPI schema too
                view_class = extend_schema(deprecated=True)(view_class)
            return view_class

        @functools.wraps(target)
        def view(*args: Any, **kwargs: Any) -> Any:
            return _add_headers(target(*args, **kwargs), headers)

        if hasattr(target, "mapping"):  # a DRF @action: keep its routing attributes and mark the operation
            view = extend_schema(deprecated=True)(view)
        return view  # type: ignore[return-value]

    return decorate
