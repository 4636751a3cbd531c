"""The transform library: pure functions that field rules chain, each with a typed parameter schema.

A transform is registered with a JSON Schema for its parameters and a factory. The factory runs once
when a mapping set is compiled (regexes compiled, value maps and rate tables loaded) and returns the
function applied to each value, so mapping a record does no parsing and no database query.
Parameters are validated when a rule is saved (`steps_validate`), never first at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator

from mappings.paths import MISSING


class TransformError(ValueError):
    """A value a transform cannot handle; the compiler adds the target field, source path and value."""


@dataclass(frozen=True)
class ValueMapData:
    """A value map loaded for compilation: source value → canonical value, and what to do when unmapped."""

    name: str
    entries: Mapping[str, Any]
    unmapped: str = "error"  # "error", "pass_through" or "default"
    default: Any = None


@dataclass
class CompileEnv:
    """What transforms may use beyond their parameters; filled once per compile (and per batch for xrefs)."""

    value_maps: Mapping[str, ValueMapData] = field(default_factory=dict)
    # (system slug, entity, external id) → canonical id, resolved for a whole batch in one query.
    xref_cache: dict[tuple[str, str, str], str] = field(default_factory=dict)


Step = Callable[[Any], Any]


@dataclass(frozen=True)
class TransformSpec:
    """A registered transform: its name, category, documentation, parameter schema and factory."""

    name: str
    category: str
    doc: str
    params_schema: dict[str, Any]
    factory: Callable[[dict[str, Any], CompileEnv], Step]
    multi_source: bool = False  # takes the list of all source values instead of one value
    output_kind: str = "json"  # "decimal" or "date" when the result needs converting to JSON


TRANSFORMS: dict[str, TransformSpec] = {}


def transform(
    name: str,
    *,
    category: str,
    params: dict[str, Any] | None = None,
    multi_source: bool = False,
    output_kind: str = "json",
) -> Callable[[Callable[[dict[str, Any], CompileEnv], Step]], Callable[[dict[str, Any], CompileEnv], Step]]:
    """Register a transform factory under `name`; its docstring is the user documentation."""
    schema = {"type": "object", "additionalProperties": False, "properties": {}, **(params or {})}

    def register(factory: Callable[[dict[str, Any], CompileEnv], Step]) -> Callable[[dict[str, Any], CompileEnv], Step]:
        if name in TRANSFORMS:
            raise RuntimeError(f"transform {name!r} is registered twice")
        Draft202012Validator.check_schema(schema)
        TRANSFORMS[name] = TransformSpec(
            name=name,
            category=category,
            doc=(factory.__doc__ or "").strip(),
            params_schema=schema,
            factory=factory,
            multi_source=multi_source,
            output_kind=output_kind,
        )
        return factory

    return register


def _empty(value: Any) -> bool:
    return value is MISSING or value is None or value == ""


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return str(value)
    raise TransformError(f"expected text, got {type(value).__name__}")


def _string_step(operation: Callable[[str], Any]) -> Step:
    # Hot path: a str goes straight to the operation; absent values stay absent; numbers become text first.
    def step(value: Any) -> Any:
        if value.__class__ is str:
            return operation(value)
        if value is MISSING or value is None:
            return value
        return operation(_text(value))

    return step


def _passes_empty(fn: Callable[[Any], Any]) -> Step:
    # Text and number transforms leave an absent value absent: "required" and "default" decide about it.
    def step(value: Any) -> Any:
        if value is MISSING or value is None:
            return value
        return fn(value)

    return step


# --- text -------------------------------------------------------------------------------------------


@transform("trim", category="text")
def _trim(params: dict[str, Any], env: CompileEnv) -> Step:
    """Remove leading and trailing whitespace."""
    return _string_step(str.strip)


@transform("upper", category="text")
def _upper(params: dict[str, Any], env: CompileEnv) -> Step:
    """Upper-case the text."""
    return _string_step(str.upper)


@transform("lower", category="text")
def _lower(params: dict[str, Any], env: CompileEnv) -> Step:
    """Lower-case the text."""
    return _string_step(str.lower)


@transform("title", category="text")
def _title(params: dict[str, Any], env: CompileEnv) -> Step:
    """Capitalise each word."""
    return _string_step(str.title)


@transform(
    "regex_replace",
    category="text",
    params={
        "properties": {
            "pattern": {"type": "string", "minLength": 1, "maxLength": 500},
            "replacement": {"type": "string"},
        },
        "required": ["pattern", "replacement"],
    },
)
def _regex_replace(params: dict[str, Any], env: CompileEnv) -> Step:
    """Replace every match of `pattern` (Python regular expression) by `replacement` (\\1 for groups)."""
    try:
        pattern = re.compile(params["pattern"])
    except re.error as exc:
        raise TransformError(f"pattern is not a valid regular expression: {exc}") from exc
    replacement = params["replacement"]
    return _passes_empty(lambda v: pattern.sub(replacement, _text(v)))


@transform(
    "concat",
    category="text",
    multi_source=True,
    params={"properties": {"separator": {"type": "string"}, "skip_empty": {"type": "boolean"}}},
)
def _concat(params: dict[str, Any], env: CompileEnv) -> Step:
    """Join the values of all source paths with `separator` (default a space), skipping empty ones by default."""
    separator = params.get("separator", " ")
    skip_empty = params.get("skip_empty", True)

    def step(values: Any) -> Any:
        items = values if values.__class__ is list else [values]
        if skip_empty:
            items = [item for item in items if not (item is MISSING or item is None or item == "")]
        return separator.join([item if item.__class__ is str else _text(item) for item in items])

    return step


@transform(
    "split",
    category="text",
    params={
        "properties": {"separator": {"type": "string", "minLength": 1}, "index": {"type": "integer"}},
        "required": ["separator"],
    },
)
def _split(params: dict[str, Any], env: CompileEnv) -> Step:
    """Split the text on `separator`; with `index`, keep only that part (negative counts from the end)."""
    separator = params["separator"]
    index = params.get("index")

    def split(value: Any) -> Any:
        parts = _text(value).split(separator)
        if index is None:
            return parts
        if not -len(parts) <= index < len(parts):
            raise TransformError(
                f"has {len(parts)} part(s) after splitting on {separator!r}; index {index} is out of range"
            )
        return parts[index]

    return _passes_empty(split)


@transform(
    "substring",
    category="text",
    params={"properties": {"start": {"type": "integer"}, "end": {"type": "integer"}}},
)
def _substring(params: dict[str, Any], env: CompileEnv) -> Step:
    """Keep characters from `start` (default 0) up to, not including, `end` (default the end)."""
    start = params.get("start", 0)
    end = params.get("end")
    return _passes_empty(lambda v: _text(v)[start:end])


# --- values -----------------------------------------------------------------------------------------


@transform(
    "map_value",
    category="values",
    params={"properties": {"value_map": {"type": "string", "minLength": 1}}, "required": ["value_map"]},
)
def _map_value(params: dict[str, Any], env: CompileEnv) -> Step:
    """Look the value up in the named value map; unmapped values follow the map's rule (error, pass, default)."""
    name = params["value_map"]
    data = env.value_maps.get(name)
    if data is None:
        raise TransformError(f"value map {name!r} does not exist; create it under Mappings → Value maps first")
    entries = dict(data.entries)
    unmapped, fallback = data.unmapped, data.default

    def step(value: Any) -> Any:
        if value is MISSING or value is None:
            return value
        key = value if isinstance(value, str) else str(value)
        if key in entries:
            return entries[key]
        if unmapped == "pass_through":
            return value
        if unmapped == "default":
            return fallback
        raise TransformError(f"{value!r} is not in value map {name!r}; add it to the map or change its unmapped rule")

    return step


@transform("default", category="values", params={"properties": {"value": {}}, "required": ["value"]})
def _default(params: dict[str, Any], env: CompileEnv) -> Step:
    """Use `value` when the source is missing, null or empty."""
    fallback = params["value"]
    return lambda value: fallback if _empty(value) else value


@transform("coalesce", category="values", multi_source=True)
def _coalesce(params: dict[str, Any], env: CompileEnv) -> Step:
    """Take the first source path whose value is present and not empty."""

    def step(values: Any) -> Any:
        for value in values if isinstance(values, list) else [values]:
            if not _empty(value):
                return value
        return MISSING

    return step


@transform(
    "if_equals",
    category="values",
    params={"properties": {"equals": {}, "then": {}, "else": {}}, "required": ["equals", "then"]},
)
def _if_equals(params: dict[str, Any], env: CompileEnv) -> Step:
    """When the value equals `equals`, give `then`; otherwise `else` (or the value itself when `else` is absent)."""
    expected, then = params["equals"], params["then"]
    has_else, otherwise = "else" in params, params.get("else")
    return lambda value: then if value == expected else (otherwise if has_else else value)


@transform(
    "case",
    category="values",
    params={
        "properties": {
            "cases": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {"when": {}, "then": {}},
                    "required": ["when", "then"],
                    "additionalProperties": False,
                },
            },
            "default": {},
        },
        "required": ["cases"],
    },
)
def _case(params: dict[str, Any], env: CompileEnv) -> Step:
    """Give the `then` of the first case whose `when` equals the value; else `default`, or the value unchanged."""
    table = [(case["when"], case["then"]) for case in params["cases"]]
    has_default, fallback = "default" in params, params.get("default")

    def step(value: Any) -> Any:
        for when, then in table:
            if value == when:
                return then
        return fallback if has_default else value

    return step


# --- dates and times --------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TransformError(f"unknown time zone {name!r}; use an IANA name such as Europe/London") from exc


_FAST_CODES = {
    "d": r"(?P<d>\d{1,2})",
    "m": r"(?P<m>\d{1,2})",
    "Y": r"(?P<Y>\d{4})",
    "H": r"(?P<H>\d{1,2})",
    "M": r"(?P<M>\d{1,2})",
    "S": r"(?P<S>\d{1,2})",
}


def _date_parser(fmt: str) -> Callable[[str], datetime]:
    """A parser for one format, compiled once.

    strptime re-reads its format and the locale on every call and is the slowest step of most
    mappings; formats made only of %d %m %Y %H %M %S and literals become one regex instead.
    """
    if fmt == "iso":
        return datetime.fromisoformat
    pattern, index, seen = "", 0, set()
    while index < len(fmt):
        char = fmt[index]
        if char == "%" and index + 1 < len(fmt):
            code = fmt[index + 1]
            if code not in _FAST_CODES or code in seen:
                return lambda text: datetime.strptime(text, fmt)
            pattern += _FAST_CODES[code]
            seen.add(code)
            index += 2
        else:
            pattern += re.escape(char)
            index += 1
    if not {"d", "m", "Y"} <= seen:
        return lambda text: datetime.strptime(text, fmt)
    match = re.compile(pattern + r"\Z").match

    def parse(text: str) -> datetime:
        found = match(text)
        if found is None:
            raise ValueError(f"{text!r} does not match {fmt}")
        parts = found.groupdict()
        return datetime(
            int(parts["Y"]),
            int(parts["m"]),
            int(parts["d"]),
            int(parts.get("H") or 0),
            int(parts.get("M") or 0),
            int(parts.get("S") or 0),
        )

    return parse


def _day_parser(fmt: str, general: Callable[[str], datetime]) -> Callable[[str], date]:
    """A parser from text to a date: for %d, %m, %Y and literals, one regex match and `date(...)`."""
    codes = re.findall(r"%(.)", fmt)
    if sorted(codes) != ["Y", "d", "m"]:
        return lambda text: general(text).date()
    pattern = "".join(
        _FAST_CODES[part[1]] if part.startswith("%") else re.escape(part) for part in re.split(r"(%.)", fmt) if part
    )
    match = re.compile(pattern + r"\Z").match
    year, month, day = (codes.index(code) + 1 for code in ("Y", "m", "d"))

    def parse(text: str) -> date:
        found = match(text)
        if found is None:
            raise ValueError(f"{text!r} does not match {fmt}")
        return date(int(found.group(year)), int(found.group(month)), int(found.group(day)))

    return parse


@transform(
    "parse_date",
    category="dates",
    output_kind="date",
    params={
        "properties": {
            "formats": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            "timezone": {"type": "string"},
            "output": {"enum": ["date", "datetime"]},
        }
    },
)
def _parse_date(params: dict[str, Any], env: CompileEnv) -> Step:
    """Parse text with the first matching of `formats` (strftime codes, or "iso"); `output` date or datetime
    (a naive time is read in `timezone`, default UTC, and given in UTC)."""
    formats = params.get("formats", ["iso"])
    parsers = [_date_parser(fmt) for fmt in formats]
    zone = _zone(params.get("timezone", "UTC"))
    as_date = params.get("output", "date") == "date"
    day_parsers = [_day_parser(fmt, parser) for fmt, parser in zip(formats, parsers, strict=True)]

    def parse(value: Any) -> Any:
        if value is MISSING or value is None:
            return value
        parsed: datetime | None
        if isinstance(value, datetime):
            parsed = value
        elif isinstance(value, date):
            return value if as_date else datetime(value.year, value.month, value.day, tzinfo=zone).astimezone(UTC)
        else:
            text = _text(value).strip()
            parsed = None
            for parser in parsers:
                try:
                    parsed = parser(text)
                    break
                except ValueError:
                    continue
            if parsed is None:
                raise TransformError(f"{text!r} matches none of the formats {formats}")
        assert parsed is not None
        if as_date:
            return parsed.date()
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zone)
        return parsed.astimezone(UTC)

    if not as_date:
        return parse

    def parse_day(value: Any) -> Any:
        # Text to a date is the common case: one match, straight to a date, no datetime in between.
        if value.__class__ is not str:
            return parse(value)
        text = value.strip()
        for parser in day_parsers:
            try:
                return parser(text)
            except ValueError:
                continue
        raise TransformError(f"{text!r} matches none of the formats {formats}")

    return parse_day


@transform(
    "format_date",
    category="dates",
    params={"properties": {"format": {"type": "string", "minLength": 1}}, "required": ["format"]},
)
def _format_date(params: dict[str, Any], env: CompileEnv) -> Step:
    """Format a date or date-time (or an ISO text) with strftime `format`, for example %d.%m.%Y."""
    fmt = params["format"]

    def format_value(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError as exc:
                raise TransformError(f"{value!r} is not an ISO date; add a parse_date step before format_date") from exc
        if not isinstance(value, date):
            raise TransformError(f"expected a date, got {type(value).__name__}")
        return value.strftime(fmt)

    return _passes_empty(format_value)


# --- numbers ----------------------------------------------------------------------------------------

ROUNDING = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN, "down": ROUND_DOWN, "up": ROUND_UP}


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise TransformError("expected a number, got a boolean")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        return Decimal(_text(value).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise TransformError(f"{value!r} is not a number") from exc


@transform(
    "to_decimal",
    category="numbers",
    output_kind="decimal",
    params={
        "properties": {
            "places": {"type": "integer", "minimum": 0, "maximum": 10},
            "rounding": {"enum": list(ROUNDING)},
        }
    },
)
def _to_decimal(params: dict[str, Any], env: CompileEnv) -> Step:
    """Read a number (text with thousands commas is fine); with `places`, round (`rounding`, default half_up)."""
    places = params.get("places")
    rounding = ROUNDING[params.get("rounding", "half_up")]
    quantum = Decimal(1).scaleb(-places) if places is not None else None

    def convert(value: Any) -> Any:
        if value.__class__ is str:
            try:
                number = Decimal(value.replace(",", ""))
            except InvalidOperation:
                raise TransformError(f"{value!r} is not a number") from None
        elif value is MISSING or value is None:
            return value
        else:
            number = _decimal(value)
        if not number.is_finite():
            raise TransformError(f"{value!r} is not a finite number")
        return number.quantize(quantum, rounding=rounding) if quantum is not None else number

    return convert


@transform(
    "multiply",
    category="numbers",
    output_kind="decimal",
    params={"properties": {"factor": {"type": "number"}}, "required": ["factor"]},
)
def _multiply(params: dict[str, Any], env: CompileEnv) -> Step:
    """Multiply by `factor`."""
    factor = _decimal(params["factor"])
    return _passes_empty(lambda v: _decimal(v) * factor)


@transform(
    "divide",
    category="numbers",
    output_kind="decimal",
    params={"properties": {"divisor": {"type": "number", "not": {"const": 0}}}, "required": ["divisor"]},
)
def _divide(params: dict[str, Any], env: CompileEnv) -> Step:
    """Divide by `divisor` (never zero)."""
    divisor = _decimal(params["divisor"])
    return _passes_empty(lambda v: _decimal(v) / divisor)


@transform(
    "hours_from_minutes",
    category="numbers",
    output_kind="decimal",
    params={"properties": {"places": {"type": "integer", "minimum": 0}}},
)
def _hours_from_minutes(params: dict[str, Any], env: CompileEnv) -> Step:
    """Turn minutes into hours, rounded half-up to `places` (default 2)."""
    quantum = Decimal(1).scaleb(-params.get("places", 2))
    return _passes_empty(lambda v: (_decimal(v) / 60).quantize(quantum, rounding=ROUND_HALF_UP))


TRUE_WORDS = ["true", "t", "yes", "y", "1", "on"]
FALSE_WORDS = ["false", "f", "no", "n", "0", "off", ""]


@transform(
    "to_bool",
    category="numbers",
    params={
        "properties": {
            "true_values": {"type": "array", "items": {"type": "string"}},
            "false_values": {"type": "array", "items": {"type": "string"}},
        }
    },
)
def _to_bool(params: dict[str, Any], env: CompileEnv) -> Step:
    """Read yes/no, true/false, 1/0 (or the listed `true_values` / `false_values`, case-insensitive) as a boolean."""
    truthy = {word.lower() for word in params.get("true_values", TRUE_WORDS)}
    falsy = {word.lower() for word in params.get("false_values", FALSE_WORDS)}

    def convert(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in truthy:
            return True
        if word in falsy:
            return False
        raise TransformError(f"{value!r} is neither a true value {sorted(truthy)} nor a false value {sorted(falsy)}")

    return _passes_empty(convert)


@transform(
    "currency_convert",
    category="numbers",
    output_kind="decimal",
    multi_source=True,
    params={
        "properties": {
            "to": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "places": {"type": "integer", "minimum": 0, "maximum": 6},
            "rates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "from": {"type": "string", "pattern": "^[A-Z]{3}$"},
                        "valid_from": {"type": "string", "format": "date"},
                        "rate": {"type": ["number", "string"]},
                    },
                    "required": ["from", "valid_from", "rate"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["to", "rates"],
    },
)
def _currency_convert(params: dict[str, Any], env: CompileEnv) -> Step:
    """Convert [amount, currency, date] (three source paths) into `to` with the latest rate valid on that date."""
    target = params["to"]
    quantum = Decimal(1).scaleb(-params.get("places", 2))
    table: dict[str, list[tuple[date, Decimal]]] = {}
    for row in params["rates"]:
        table.setdefault(row["from"], []).append((date.fromisoformat(row["valid_from"]), _decimal(row["rate"])))
    for rows in table.values():
        rows.sort()

    def convert(values: Any) -> Any:
        if not isinstance(values, list) or len(values) != 3:
            raise TransformError("needs three source paths: amount, currency and date")
        amount, currency, on = values
        if _empty(amount):
            return amount
        number = _decimal(amount)
        if currency == target:
            return number.quantize(quantum, rounding=ROUND_HALF_UP)
        if isinstance(on, str):
            on = date.fromisoformat(on[:10])
        elif isinstance(on, datetime):
            on = on.date()
        if not isinstance(on, date):
            raise TransformError(f"the date {on!r} is not a date")
        candidates = [rate for valid_from, rate in table.get(str(currency), []) if valid_from <= on]
        if not candidates:
            raise TransformError(f"no {currency}→{target} rate valid on {on.isoformat()}; add one to the rate table")
        return (number * candidates[-1]).quantize(quantum, rounding=ROUND_HALF_UP)

    return convert


@transform(
    "lookup_xref",
    category="references",
    params={
        "properties": {"system": {"type": "string", "minLength": 1}, "entity": {"type": "string", "minLength": 1}},
        "required": ["system", "entity"],
    },
)
def _lookup_xref(params: dict[str, Any], env: CompileEnv) -> Step:
    """Replace an external id of `system` for `entity` by the canonical id, through the cross-references."""
    system, entity = params["system"], params["entity"]
    cache = env.xref_cache

    def lookup(value: Any) -> Any:
        key = (system, entity, str(value))
        try:
            return cache[key]
        except KeyError:
            raise TransformError(
                f"no cross-reference for {entity} {value!r} in system {system!r}; sync that {entity} first"
            ) from None

    return _passes_empty(lookup)


# --- validation at save time ------------------------------------------------------------------------


def steps_validate(steps: Any, *, source_count: int, value_map_names: set[str] | None = None) -> list[str]:
    """Every problem with a rule's transform steps, as user-facing messages naming the step; [] when valid."""
    if not isinstance(steps, list):
        return ['Transform steps must be a list of {"transform": name, "params": {...}}.']
    problems: list[str] = []
    for index, step in enumerate(steps, start=1):
        if not isinstance(step, dict) or "transform" not in step:
            problems.append(f'Step {index}: write it as {{"transform": name, "params": {{...}}}}.')
            continue
        name = step["transform"]
        spec = TRANSFORMS.get(name)
        if spec is None:
            problems.append(
                f"Step {index}: unknown transform {name!r}. Known transforms: {', '.join(sorted(TRANSFORMS))}."
            )
            continue
        params = step.get("params") or {}
        for error in Draft202012Validator(spec.params_schema).iter_errors(params):
            where = ".".join(str(part) for part in error.absolute_path) or "params"
            problems.append(f"Step {index} ({name}): parameter {where}: {error.message}.")
        if spec.multi_source and index != 1:
            problems.append(f"Step {index} ({name}): combines several source paths, so it must be the first step.")
        if index == 1 and source_count > 1 and not spec.multi_source:
            problems.append(
                f"Step 1 ({name}): the rule has {source_count} source paths; start with concat, coalesce or "
                "currency_convert to combine them."
            )
        if name == "map_value" and value_map_names is not None and params.get("value_map") not in value_map_names:
            problems.append(f"Step {index} (map_value): value map {params.get('value_map')!r} does not exist.")
        if name == "regex_replace" and "pattern" in params:
            try:
                re.compile(params["pattern"])
            except re.error as exc:
                problems.append(f"Step {index} (regex_replace): pattern is not a valid regular expression: {exc}.")
        if name == "parse_date" and "timezone" in params:
            try:
                ZoneInfo(params["timezone"])
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(f"Step {index} (parse_date): unknown time zone {params['timezone']!r}.")
    if source_count > 1 and not steps:
        problems.append("A rule with several source paths needs a first step that combines them (concat or coalesce).")
    return problems
