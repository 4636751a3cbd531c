"""Dotted paths with list indexes and wildcards (`client.name`, `lines[0].amount`, `lines[*].amount`).

Paths are parsed once into tokens and turned into small getter/setter closures, so mapping a record
never re-parses a path. Reading a missing key yields MISSING rather than raising, because a missing
source is a normal case the rule decides about (required, default, coalesce).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from integrationhub.errors import HubValidationError


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
WILDCARD = "*"

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]|(\.)")

Token = str | int  # a dict key, a list index, or WILDCARD


class PathError(HubValidationError):
    """A path that cannot be parsed."""


def parse_path(path: str) -> tuple[Token, ...]:
    """Split `a.b[0].c[*]` into ("a", "b", 0, "c", "*"); raise PathError naming the path when it is malformed."""
    if not path or not isinstance(path, str):
        raise PathError("A path must be a non-empty string such as `client.name` or `lines[*].amount`.")
    tokens: list[Token] = []
    position = 0
    expect_key = True
    for match in _SEGMENT.finditer(path):
        if match.start() != position:
            break
        key, index, dot = match.groups()
        if dot:
            if expect_key:
                break
            expect_key = True
        elif key is not None:
            if not expect_key:
                break
            tokens.append(key.strip())
            expect_key = False
        else:
            if expect_key or not tokens:
                break
            tokens.append(WILDCARD if index == WILDCARD else int(index))
            expect_key = False
        position = match.end()
    if position != len(path) or expect_key or not tokens:
        raise PathError(
            f"Path `{path}` is not valid near character {position + 1}. "
            "Use dotted keys with optional [n] or [*], for example `lines[*].amount`."
        )
    return tuple(tokens)


def has_wildcard(tokens: tuple[Token, ...]) -> bool:
    return WILDCARD in tokens


def _step(value: Any, token: Token) -> Any:
    if isinstance(token, str):
        if isinstance(value, dict):
            return value.get(token, MISSING)
        return MISSING
    if isinstance(value, list) and -len(value) <= token < len(value):
        return value[token]
    return MISSING


def compile_getter(path: str) -> Callable[[Any], Any]:
    """Return a function reading `path` from a record: a value, MISSING, or (with [*]) a list of values."""
    tokens = parse_path(path)
    if not has_wildcard(tokens):
        if all(isinstance(token, str) for token in tokens):
            return _dict_chain_getter(tokens)  # type: ignore[arg-type]

        def get_plain(record: Any) -> Any:
            value = record
            for token in tokens:
                value = _step(value, token)
                if value is MISSING:
                    return MISSING
            return value

        return get_plain

    def get_wild(record: Any) -> Any:
        values = [record]
        for token in tokens:
            if token == WILDCARD:
                values = [item for value in values if isinstance(value, list) for item in value]
            else:
                values = [stepped for value in values if (stepped := _step(value, token)) is not MISSING]
        return values

    return get_wild


def _dict_chain_getter(keys: tuple[str, ...]) -> Callable[[Any], Any]:
    # The common case (plain dotted keys) gets a specialised closure: it is the hot path of every mapping.
    if len(keys) == 1:
        (only,) = keys

        def get1(record: Any) -> Any:
            return record.get(only, MISSING) if isinstance(record, dict) else MISSING

        return get1
    if len(keys) == 2:
        first, second = keys

        def get2(record: Any) -> Any:
            inner = record.get(first) if isinstance(record, dict) else None
            return inner.get(second, MISSING) if isinstance(inner, dict) else MISSING

        return get2

    def get_n(record: Any) -> Any:
        value = record
        for key in keys:
            if not isinstance(value, dict):
                return MISSING
            value = value.get(key, MISSING)
            if value is MISSING:
                return MISSING
        return value

    return get_n


def compile_setter(path: str) -> Callable[[dict[str, Any], Any], None]:
    """Return a function writing a value at `path` into an output dict, creating nested dicts and lists.

    With a [*] in the path the value must be a list: element i goes to list item i.
    """
    tokens = parse_path(path)
    if not isinstance(tokens[0], str):
        raise PathError(f"Output path `{path}` must start with a field name, not an index.")
    if len(tokens) == 1:
        (key,) = tokens

        def set1(output: dict[str, Any], value: Any) -> None:
            output[key] = value  # type: ignore[index]

        return set1

    if all(isinstance(token, str) and token != WILDCARD for token in tokens):
        parents = [str(token) for token in tokens[:-1]]
        leaf = str(tokens[-1])

        def set_keys(output: dict[str, Any], value: Any) -> None:
            container = output
            for key in parents:
                child = container.get(key)
                if child.__class__ is not dict:
                    child = container[key] = {}
                container = child  # type: ignore[assignment]
            container[leaf] = value

        return set_keys

    def set_path(output: dict[str, Any], value: Any) -> None:
        _assign(output, tokens, value, path)

    return set_path


def _container_for(token: Token) -> Any:
    return [] if token == WILDCARD or isinstance(token, int) else {}


def _assign(container: Any, tokens: tuple[Token, ...], value: Any, path: str) -> None:
    token, rest = tokens[0], tokens[1:]
    if token == WILDCARD:
        if not isinstance(value, list):
            raise PathError(f"Output path `{path}` has [*], so its value must be a list, not {type(value).__name__}.")
        while len(container) < len(value):
            container.append(_container_for(rest[0]) if rest else None)
        for index, item in enumerate(value):
            if rest:
                _assign(container[index], rest, item, path)
            else:
                container[index] = item
        return
    if isinstance(token, int):
        while len(container) <= token:
            container.append(_container_for(rest[0]) if rest else None)
        if not rest:
            container[token] = value
            return
        if not isinstance(container[token], (dict, list)):
            container[token] = _container_for(rest[0])
        _assign(container[token], rest, value, path)
        return
    if not rest:
        container[token] = value
        return
    child = container.get(token)
    if not isinstance(child, (dict, list)):
        child = _container_for(rest[0])
        container[token] = child
    _assign(child, rest, value, path)
