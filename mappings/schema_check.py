"""A fast yes/no schema check run before the full JSON Schema validator.

Validating a mapped record with `jsonschema` walks the schema through generic keyword functions and
builds a validator object per level: on the batch path it was a sixth of the time per entry. Most records
are valid, so each schema also gets a check compiled to plain Python code by fastjsonschema. When it says
"valid" the record is valid; when it says "invalid" (or cannot tell) the full validator runs and gives the
errors with their paths, so the messages users see, and the final word, stay those of `jsonschema`.

fastjsonschema implements draft 7. It is only used for schemas whose every keyword means the same in
draft 7 and draft 2020-12; a schema with any other keyword (`prefixItems`, `unevaluatedProperties`,
`$dynamicRef`, `multipleOf`, a `$ref` left after inlining, an enum of numbers, …) gets no fast check.
Formats are checked by the same format checker the full validator uses, or not at all when it uses none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import fastjsonschema
from jsonschema import FormatChecker

logger = logging.getLogger(__name__)

# Keywords whose meaning is the same in draft 7 and draft 2020-12, given the values allowed below.
_SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
    }
)
# Keywords that only describe; dropped before compiling (fastjsonschema would fill in `default`s).
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "x-sensitive",
    }
)
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties"})
_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SUBSCHEMAS = frozenset({"additionalProperties", "propertyNames", "items", "contains", "not", "if", "then", "else"})

FastCheck = Callable[[Any], bool]


class _Unsupported(Exception):
    """A keyword or value fastjsonschema might read differently from jsonschema."""


def _portable(node: Any) -> Any:
    """The schema without annotations; raises _Unsupported for anything outside the shared keywords."""
    if isinstance(node, bool):
        return node
    if not isinstance(node, Mapping):
        raise _Unsupported
    portable: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS:
            continue
        if key not in _SCHEMA_KEYWORDS:
            raise _Unsupported
        if key in _SUBSCHEMA_MAPS:
            if not isinstance(value, Mapping):
                raise _Unsupported
            portable[key] = {name: _portable(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS:
            if not isinstance(value, list):
                raise _Unsupported
            portable[key] = [_portable(sub) for sub in value]
        elif key in _SUBSCHEMAS:
            # `items` as a list is a tuple in draft 7 but not allowed in 2020-12: no fast check.
            portable[key] = _portable(value)
        elif key in ("enum", "const") and _has_number_or_bool(value):
            # jsonschema tells 1 from True in enum and const; fastjsonschema's `in` and `==` do not.
            raise _Unsupported
        else:
            portable[key] = value
    return portable


def _has_number_or_bool(value: Any) -> bool:
    if isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, list):
        return any(_has_number_or_bool(item) for item in value)
    if isinstance(value, Mapping):
        return any(_has_number_or_bool(item) for item in value.values())
    return False


def _format_names(node: Any) -> set[str]:
    if isinstance(node, Mapping):
        found = {node["format"]} if isinstance(node.get("format"), str) else set()
        for value in node.values():
            found |= _format_names(value)
        return found
    if isinstance(node, list):
        return set().union(*(_format_names(item) for item in node)) if node else set()
    return set()


def fast_check_compile(schema: Mapping[str, Any], *, format_checker: FormatChecker | None = None) -> FastCheck | None:
    """A function telling whether an instance is valid for `schema`, or None when the schema has no fast check.

    A True answer is final; on False run the full validator, which is the reference."""
    try:
        portable = _portable(schema)
    except _Unsupported:
        return None
    formats: dict[str, Callable[[Any], bool]] = {}
    if format_checker is not None:
        for name in _format_names(portable):
            formats[name] = lambda value, name=name: format_checker.conforms(value, name)  # type: ignore[misc]
    try:
        validate = fastjsonschema.compile(
            portable, formats=formats, use_default=False, use_formats=format_checker is not None
        )
    except fastjsonschema.JsonSchemaDefinitionException:
        logger.info("schema has no fast check: fastjsonschema cannot compile it", exc_info=True)
        return None

    def check(instance: Any) -> bool:
        try:
            validate(instance)
        except fastjsonschema.JsonSchemaValueException:
            return False
        except Exception:  # noqa: BLE001 - an unexpected instance: the full validator decides
            return False
        return True

    return check
