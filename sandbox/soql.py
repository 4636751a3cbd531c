"""A small SOQL subset for the sandbox CRM: SELECT fields FROM Object [WHERE a AND b] [ORDER BY ...] [LIMIT n].

Supported: comparison operators = != <> > >= < <= and LIKE ('%' at either end), values that are quoted
strings, numbers, true/false, null, dates and datetimes (2024-01-01T00:00:00Z, ...000+0000), conditions
joined by AND, ordering by Id or by one of LastModifiedDate / SystemModstamp / CreatedDate then Id,
ascending (the orders the sandbox can page through with a keyset, so paging never skips a record).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from dateutil.parser import isoparse
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTransform

TIMESTAMP_COLUMNS = {"LastModifiedDate": "updated_at", "SystemModstamp": "updated_at", "CreatedDate": "created_at"}

_QUERY = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<sobject>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>.+?))?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONDITION = re.compile(
    r"\s*(?P<field>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>!=|<>|>=|<=|=|>|<|\bLIKE\b)\s*"
    r"(?P<value>'(?:[^'\\]|\\.)*'|[^\s)]+)\s*",
    re.IGNORECASE,
)
_AND = re.compile(r"AND\b", re.IGNORECASE)
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SoqlError(Exception):
    """A query the sandbox cannot run; `code` is Salesforce's errorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SoqlCondition:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class SoqlQuery:
    fields: list[str]
    sobject: str
    conditions: list[SoqlCondition] = field(default_factory=list)
    order_column: str | None = None  # updated_at / created_at, then Id; None means Id only
    limit: int | None = None


def _value(raw: str) -> Any:
    if raw.startswith("'"):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    lowered = raw.lower()
    if lowered == "null":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    if _DATETIME.match(raw):
        return isoparse(raw)
    if _DATE.match(raw):
        return raw
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{raw}'") from None


def soql_parse(text: str) -> SoqlQuery:
    """Parse the supported subset; raise SoqlError(MALFORMED_QUERY) for anything else."""
    match = _QUERY.match(text or "")
    if not match:
        raise SoqlError("MALFORMED_QUERY", "unexpected token: expected SELECT <fields> FROM <object>")
    fields = [name.strip() for name in match["fields"].split(",")]
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) for name in fields):
        raise SoqlError("MALFORMED_QUERY", "only plain field names are supported in SELECT")
    conditions: list[SoqlCondition] = []
    where = match["where"] or ""
    position = 0
    while where and position < len(where):
        condition = _CONDITION.match(where, position)
        if not condition:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token near: '{where[position:][:30]}'")
        op = condition["op"].upper().replace("<>", "!=")
        conditions.append(SoqlCondition(condition["field"], op, _value(condition["value"])))
        position = condition.end()
        if position < len(where):
            joiner = _AND.match(where, position)
            if not joiner:
                raise SoqlError("MALFORMED_QUERY", "only AND is supported between conditions")
            position = joiner.end()
    order_column = None
    if match["order"]:
        parts = [part.strip().split() for part in match["order"].split(",")]
        names = [p[0] for p in parts]
        if any(len(p) > 2 or (len(p) == 2 and p[1].upper() != "ASC") for p in parts):
            raise SoqlError("MALFORMED_QUERY", "the sandbox orders ascending only")
        if names == ["Id"]:
            order_column = None
        elif names[0] in TIMESTAMP_COLUMNS and names[1:] in ([], ["Id"]):
            order_column = TIMESTAMP_COLUMNS[names[0]]
        else:
            raise SoqlError(
                "MALFORMED_QUERY", "ORDER BY supports Id, or LastModifiedDate/SystemModstamp/CreatedDate, Id"
            )
    limit = int(match["limit"]) if match["limit"] else None
    return SoqlQuery(
        fields=fields, sobject=match["sobject"], conditions=conditions, order_column=order_column, limit=limit
    )


def _column(name: str) -> str | None:
    """The model column of a system field, or None for a payload field (read through a JSON key transform)."""
    if name == "Id":
        return "external_id"
    if name == "IsDeleted":
        return "deleted"
    return TIMESTAMP_COLUMNS.get(name)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def soql_apply(qs: QuerySet, conditions: list[SoqlCondition]) -> QuerySet:
    """`qs` filtered by the conditions. Payload fields go through KeyTransform, not `data__<name>`, because
    custom field names (External_Id__c) contain Django's lookup separator."""
    lookups = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
    for index, condition in enumerate(conditions):
        column = _column(condition.field)
        if column is None:
            column = f"soql_{index}"
            qs = qs.alias(**{column: KeyTransform(condition.field, "data")})
        value = condition.value
        if isinstance(value, datetime) and not column.endswith("_at"):
            value = value.isoformat()
        value = _json_value(value)
        if condition.op == "LIKE":
            text = str(value)
            core = text.strip("%")
            if text.startswith("%") and text.endswith("%"):
                lookup = "icontains"
            elif text.startswith("%"):
                lookup = "iendswith"
            elif text.endswith("%"):
                lookup = "istartswith"
            else:
                lookup = "iexact"
            qs = qs.filter(**{f"{column}__{lookup}": core})
        elif condition.op in ("=", "!="):
            term = (Q(**{f"{column}__isnull": True}) | Q(**{column: None})) if value is None else Q(**{column: value})
            qs = qs.filter(term if condition.op == "=" else ~term)
        else:
            qs = qs.filter(**{f"{column}__{lookups[condition.op]}": value})
    return qs
