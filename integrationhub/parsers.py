"""Input limits for the API: a JSON parser that refuses bodies over HUB_MAX_BODY_BYTES (413) and JSON nested
deeper than HUB_JSON_MAX_DEPTH (400), both before any object is built; every parser refuses a NUL character
(PostgreSQL stores none, so it would otherwise fail deep inside a query).

DRF reads the request stream itself, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE (which guards request.body
and form data) does not cover JSON bodies: this parser does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework.exceptions import APIException
from rest_framework.parsers import DataAndFiles, FormParser, JSONParser, MultiPartParser

# JSON strings (with escapes) are removed before counting brackets, so "[[[" inside a string does not count.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


# DRF exceptions rather than HubError: DRF imports this module while defining APIView, and
# integrationhub.errors imports DRF's views. The exception handler renders both as problem+json.
class PayloadTooLargeError(APIException):
    status_code = 413
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class JsonTooDeepError(APIException):
    status_code = 400
    default_code = "json_too_deep"
    default_detail = "The JSON is nested too deeply."


class MalformedJsonError(APIException):
    status_code = 400
    default_code = "parse_error"
    default_detail = "The body is not valid JSON."


def max_body_bytes() -> int:
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text, counted without parsing it."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class LimitedJSONParser(JSONParser):
    """JSONParser with a body-size and a nesting-depth limit; errors name the limit."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = max_body_bytes()
        request = (parser_context or {}).get("request")
        declared = 0
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
        if declared > limit:
            raise PayloadTooLargeError(f"The body has {declared} bytes; the limit is {limit} bytes.")
        # Read one byte past the limit: a body without Content-Length (chunked) is caught the same way.
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLargeError(f"The body is over the limit of {limit} bytes.")
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            raise MalformedJsonError(f"The body is not valid {encoding} text.") from None
        max_depth = int(getattr(settings, "HUB_JSON_MAX_DEPTH", 32))
        depth = json_depth(text)
        if depth > max_depth:
            raise JsonTooDeepError(f"The JSON is nested {depth} levels deep; the limit is {max_depth}.")
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as error:
            raise MalformedJsonError(f"The body is not valid JSON: {error}.") from None
        # Raw control characters are not valid JSON, so a NUL can only arrive escaped.
        if "\\u0000" in text and contains_nul(data):
            raise MalformedJsonError(NUL_REFUSED)
        return data


NUL_REFUSED = "The JSON contains a NUL character (\\u0000), which the hub cannot store; remove it."


def contains_nul(value: Any) -> bool:
    """Whether a parsed JSON value holds a NUL character in any key or string (PostgreSQL stores neither)."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return True
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return False


class MalformedFormError(APIException):
    status_code = 400
    default_code = "parse_error"
    default_detail = "The form data is not valid."


def _json_with_nul(value: str) -> bool:
    """Whether a form value is JSON holding an escaped NUL character: a JSON field of a form (the API's
    serializers parse such a value as JSON) would otherwise carry the NUL to PostgreSQL."""
    if "\\u0000" not in value:
        return False
    try:
        return contains_nul(json.loads(value))
    except ValueError:
        return False


def _refuse_nul_fields(data: Any) -> None:
    """Name the first form field whose name or value holds a NUL character, raw or escaped in JSON."""
    for name, values in data.lists():
        field = name.replace("\x00", "\\u0000")
        if "\x00" in name or any(isinstance(value, str) and "\x00" in value for value in values):
            raise MalformedFormError(f"The form field {field!r} contains a NUL character, which the hub cannot store.")
        if any(isinstance(value, str) and _json_with_nul(value) for value in values):
            raise MalformedFormError(
                f"The form field {field!r} holds JSON with a NUL character (\\u0000), which the hub cannot store;"
                " remove it."
            )


class NulRefusingFormParser(FormParser):
    """FormParser that refuses a NUL character in any field name or value (400, naming the field)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        _refuse_nul_fields(data)
        return data


class NulRefusingMultiPartParser(MultiPartParser):
    """MultiPartParser that refuses a NUL character in any field name, value or file name."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parsed: DataAndFiles = super().parse(stream, media_type, parser_context)
        _refuse_nul_fields(parsed.data)
        for name, files in parsed.files.lists():
            if "\x00" in name or any("\x00" in (upload.name or "") for upload in files):
                raise MalformedFormError(f"The file field {name!r} has a NUL character in its name; rename the file.")
        return parsed


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; Python's json accepts them by default.
    raise ValueError(f"{name} is not a JSON value")
