"""Named validation rules that sync policies list and the sync engine evaluates on each canonical record.

A rule is a pure function of the record, its params and a RuleContext: it reads nothing from the database
itself, so the engine decides how lookups are done (and batched) and the tests need no fixtures. Rules
register with `@register_rule(...)` at import time; a policy names them in `validation_rules` as
`{"rule": "<name>", "params": {...}}` and the params are checked against the rule's JSON Schema on save.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from jsonschema import Draft202012Validator

from integrationhub.errors import HubError

MISSING: Any = object()

# A lookup is either a ready collection of ids or a callable answering "is this id in the set?", so the
# engine can pass a small set it already holds or a function that queries a target system lazily.
Membership = Collection[str] | Callable[[str], bool]


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule on one record: what was expected, what was found, and a sentence for the user."""

    passed: bool
    rule: str
    field: str = ""
    expected: Any = None
    actual: Any = None
    message: str = ""


@dataclass(frozen=True)
class RuleContext:
    """Lookups the sync engine supplies to the rules; a rule whose lookup is missing fails rather than guesses."""

    # rate_lookup(legal_entity=, role=, on_date=, client=, contract=) -> object with bill_rate, cost_rate and
    # tolerance_percent; governance.selectors.rate_for fits and is what the engine passes in production.
    rate_lookup: Callable[..., Any] | None = None
    known_resources: Membership | None = None
    active_projects: Membership | None = None
    billed_milestone_ids: Membership | None = None
    # contract_remaining(contract_id) -> remaining value (None when the contract is unknown).
    contract_remaining: Callable[[str], Decimal | int | float | str | None] | None = None
    # period_calendar(legal_entity_code, day) -> whether the entity's period calendar has that day open;
    # governance.selectors.accounting_period_is_open (or period_calendar_preload for a page) fits. The calendar is
    # the only answer to "is the period open?", whatever path the entry came by.
    period_calendar: Callable[[str, datetime.date], bool] | None = None
    # hours_booked(resource_id, day, exclude_id) -> hours of that person's other entries of that day known to the hub.
    hours_booked: Callable[[str, datetime.date, str], Decimal | int | float] | None = None
    # entity_currencies(legal_entity_code, day) -> the currencies an entry of that entity may carry on that day
    # (its base currency and the currencies of its rate cards valid that day).
    entity_currencies: Callable[[str, datetime.date], Collection[str]] | None = None


@dataclass(frozen=True)
class Rule:
    """A registered rule: its name, what it is for, the JSON Schema of its params and its evaluate function."""

    name: str
    label: str
    description: str
    params_schema: dict[str, Any]
    evaluate: Callable[[Mapping[str, Any], Mapping[str, Any], RuleContext], RuleResult]

    @functools.cached_property
    def defaults(self) -> dict[str, Any]:
        # Read once per rule, not once per record and rule (a tenth of the batch path's rule time).
        return schema_defaults(self.params_schema)

    def run(self, record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
        """Evaluate with the schema defaults filled in, so each evaluate function sees every param."""
        defaults = self.defaults
        return self.evaluate(record, {**defaults, **params} if defaults else params, context)


_REGISTRY: dict[str, Rule] = {}


def register_rule(
    name: str, *, label: str, description: str, params_schema: dict[str, Any]
) -> Callable[[Callable[..., RuleResult]], Callable[..., RuleResult]]:
    """Decorator: add an evaluate function to the rule registry under `name`."""
    Draft202012Validator.check_schema(params_schema)

    def decorate(evaluate: Callable[..., RuleResult]) -> Callable[..., RuleResult]:
        if name in _REGISTRY and _REGISTRY[name].evaluate is not evaluate:
            raise ValueError(f"A validation rule named {name!r} is already registered; choose another name.")
        _REGISTRY[name] = Rule(name, label, description, params_schema, evaluate)
        return evaluate

    return decorate


def rule_get(name: str) -> Rule:
    """The registered rule called `name`; raises HubError naming the known rules if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise HubError(f"No validation rule is called {name!r}. Known rules: {', '.join(sorted(_REGISTRY))}.") from None


def rule_list() -> list[Rule]:
    """Every registered rule, by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def schema_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {key: spec["default"] for key, spec in schema.get("properties", {}).items() if "default" in spec}


def rule_entries_validate(entries: Any) -> list[str]:
    """Check a policy's `validation_rules` list; return one message per problem, naming the entry index and field."""
    if not isinstance(entries, list):
        return ['Use a list of rules, for example [{"rule": "entry_approved", "params": {}}].']
    problems: list[str] = []
    for index, entry in enumerate(entries):
        where = f"Rule {index + 1} (validation_rules[{index}])"
        if not isinstance(entry, dict):
            problems.append(f'{where}: use an object {{"rule": "<name>", "params": {{...}}}}.')
            continue
        unknown_keys = sorted(set(entry) - {"rule", "params", "entities"})
        if unknown_keys:
            problems.append(
                f"{where}: remove the unknown keys {', '.join(unknown_keys)}; only rule, params and entities are read."
            )
        entities = entry.get("entities", [])
        if not isinstance(entities, list) or not all(isinstance(name, str) and name for name in entities):
            problems.append(
                f'{where}: entities lists the canonical entities the rule applies to, for example ["time_entry"].'
            )
        name = entry.get("rule")
        if name not in _REGISTRY:
            problems.append(
                f"{where}: {name!r} is not a known rule; choose one of {', '.join(sorted(_REGISTRY))}."
                if name
                else f"{where}: name the rule in its 'rule' key."
            )
            continue
        params = entry.get("params", {})
        if not isinstance(params, dict):
            problems.append(f"{where} {name}: params must be an object.")
            continue
        validator = Draft202012Validator(_REGISTRY[name].params_schema)
        for error in sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(part) for part in error.absolute_path)
            field_name = f"params.{path}" if path else "params"
            problems.append(f"{where} {name}, {field_name}: {error.message}.")
    return problems


# --- helpers shared by the rules ------------------------------------------------------------------


def value_at(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path in a nested dict, or MISSING."""
    current: Any = record
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return MISSING
    return current


def _is_blank(value: Any) -> bool:
    return value is MISSING or value is None or (isinstance(value, str) and not value.strip())


def _decimal(value: Any) -> Decimal | None:
    if _is_blank(value) or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _contains(lookup: Membership, key: str) -> bool:
    if callable(lookup):
        return bool(lookup(key))
    return key in lookup


def _shown(value: Any) -> Any:
    return None if value is MISSING else value


def _missing_field(rule: str, path: str) -> RuleResult:
    return RuleResult(False, rule, path, "a value", None, f"The record has no {path}; fill it in the source system.")


def _no_lookup(rule: str, path: str, what: str) -> RuleResult:
    return RuleResult(
        False, rule, path, None, None, f"The sync engine supplied no {what}, so {rule} cannot be checked; report this."
    )


def _membership_rule(
    *, rule: str, record: Mapping[str, Any], path: str, lookup: Membership | None, what: str, found: bool, message: str
) -> RuleResult:
    """Shared body of the rules that pass when a record's id is (or is not) in a lookup set."""
    value = value_at(record, path)
    if _is_blank(value):
        return _missing_field(rule, path)
    if lookup is None:
        return _no_lookup(rule, path, what)
    is_in = _contains(lookup, str(value))
    if is_in == found:
        return RuleResult(True, rule, path, None, value, "")
    return RuleResult(False, rule, path, f"{'in' if found else 'not in'} {what}", value, message.format(value=value))


def _field_param(default: str, description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "default": default, "description": description}


# --- the rules ----------------------------------------------------------------------------------------


@register_rule(
    "entry_approved",
    label="Entry approved",
    description="Only approved time or expense entries are posted.",
    params_schema={
        "type": "object",
        "properties": {
            "field": _field_param("status", "Path of the approval status."),
            "approved_values": {"type": "array", "items": {"type": "string"}, "minItems": 1, "default": ["approved"]},
        },
        "additionalProperties": False,
    },
)
def entry_approved(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    path, allowed = params["field"], params["approved_values"]
    value = value_at(record, path)
    if not _is_blank(value) and str(value) in allowed:
        return RuleResult(True, "entry_approved", path, allowed, value)
    return RuleResult(
        False,
        "entry_approved",
        path,
        allowed,
        _shown(value),
        f"The entry is {_shown(value)!r}, not approved; approve it in the PSA and it will be posted on the next sync.",
    )


@register_rule(
    "rate_matches_card",
    label="Rate matches the rate card",
    description="The entry's rate equals the rate card's rate for its role and date, within the tolerance.",
    params_schema={
        "type": "object",
        "properties": {
            "rate_kind": {"enum": ["bill", "cost"], "default": "bill"},
            "rate_field": _field_param("rate", "Path of the rate on the record."),
            "role_field": _field_param("role", "Path of the role."),
            "date_field": _field_param("date", "Path of the work date (YYYY-MM-DD)."),
            "legal_entity_field": _field_param("legal_entity", "Path of the legal entity code."),
            "client_field": _field_param("client_id", "Path of the client id (for a client override)."),
            "contract_field": _field_param("contract_id", "Path of the contract id (for a contract override)."),
            "tolerance_percent": {
                "type": "number",
                "minimum": 0,
                "description": "Overrides the card's tolerance when given.",
            },
        },
        "additionalProperties": False,
    },
)
def rate_matches_card(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    rule, rate_path = "rate_matches_card", params["rate_field"]
    for path in (rate_path, params["role_field"], params["date_field"], params["legal_entity_field"]):
        if _is_blank(value_at(record, path)):
            return _missing_field(rule, path)
    if context.rate_lookup is None:
        return _no_lookup(rule, rate_path, "rate lookup")
    actual = _decimal(value_at(record, rate_path))
    if actual is None:
        return RuleResult(
            False, rule, rate_path, "a number", value_at(record, rate_path), f"{rate_path} is not a number."
        )
    try:
        on_date = datetime.date.fromisoformat(str(value_at(record, params["date_field"]))[:10])
    except ValueError:
        date_path = params["date_field"]
        return RuleResult(
            False,
            rule,
            date_path,
            "YYYY-MM-DD",
            value_at(record, date_path),
            f"{date_path} is not a date; use YYYY-MM-DD.",
        )
    client, contract = value_at(record, params["client_field"]), value_at(record, params["contract_field"])
    try:
        quote = context.rate_lookup(
            legal_entity=str(value_at(record, params["legal_entity_field"])),
            role=str(value_at(record, params["role_field"])),
            on_date=on_date,
            client=None if _is_blank(client) else str(client),
            contract=None if _is_blank(contract) else str(contract),
        )
    except HubError as exc:
        return RuleResult(False, rule, rate_path, None, actual, exc.detail)
    expected = Decimal(str(quote.bill_rate if params["rate_kind"] == "bill" else quote.cost_rate))
    tolerance = Decimal(str(params.get("tolerance_percent", quote.tolerance_percent)))
    allowed = expected * tolerance / Decimal(100)
    if abs(actual - expected) <= allowed:
        return RuleResult(True, rule, rate_path, expected, actual)
    return RuleResult(
        False,
        rule,
        rate_path,
        expected,
        actual,
        f"The {params['rate_kind']} rate {actual} differs from the rate card's {expected} by more than {tolerance}%; "
        "correct the rate in the PSA or update the rate card.",
    )


@register_rule(
    "cost_code_allowed",
    label="Cost code allowed",
    description="The entry's cost code is one of the allowed codes.",
    params_schema={
        "type": "object",
        "properties": {
            "field": _field_param("cost_code", "Path of the cost code."),
            "allowed_codes": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        },
        "required": ["allowed_codes"],
        "additionalProperties": False,
    },
)
def cost_code_allowed(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    path, allowed = params["field"], params["allowed_codes"]
    value = value_at(record, path)
    if _is_blank(value):
        return _missing_field("cost_code_allowed", path)
    if str(value) in allowed:
        return RuleResult(True, "cost_code_allowed", path, allowed, value)
    return RuleResult(
        False,
        "cost_code_allowed",
        path,
        allowed,
        value,
        f"Cost code {value!r} is not allowed here; use one of {', '.join(allowed)}.",
    )


@register_rule(
    "project_active_in_erp",
    label="Project active in the ERP",
    description="The project the entry books to is active in the ERP.",
    params_schema={
        "type": "object",
        "properties": {"field": _field_param("project_id", "Path of the project id.")},
        "additionalProperties": False,
    },
)
def project_active_in_erp(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    return _membership_rule(
        rule="project_active_in_erp",
        record=record,
        path=params["field"],
        lookup=context.active_projects,
        what="active ERP projects",
        found=True,
        message="Project {value} is not active in the ERP; activate it there (or fix the project) and replay.",
    )


@register_rule(
    "resource_known",
    label="Resource known",
    description="The person on the entry is a known resource.",
    params_schema={
        "type": "object",
        "properties": {"field": _field_param("resource_id", "Path of the resource id.")},
        "additionalProperties": False,
    },
)
def resource_known(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    return _membership_rule(
        rule="resource_known",
        record=record,
        path=params["field"],
        lookup=context.known_resources,
        what="known resources",
        found=True,
        message="Resource {value} is unknown; sync the resource from the PSA or HR system first.",
    )


@register_rule(
    "period_open",
    label="Accounting period open",
    description="The accounting period of the record's date is open in its legal entity's period calendar.",
    params_schema={
        "type": "object",
        "properties": {
            "field": _field_param("date", "Path of the date whose period is checked."),
            "legal_entity_field": _field_param("legal_entity_code", "Path of the legal entity code."),
        },
        "additionalProperties": False,
    },
)
def period_open(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    path = params["field"]
    value = value_at(record, path)
    if _is_blank(value):
        return _missing_field("period_open", path)
    try:
        day = datetime.date.fromisoformat(str(value)[:10])
    except ValueError:
        return RuleResult(False, "period_open", path, "YYYY-MM-DD", value, f"{path} is not a date; use YYYY-MM-DD.")
    period = day.strftime("%Y-%m")
    if context.period_calendar is None:
        return _no_lookup("period_open", path, "the period calendar")
    entity_path = params["legal_entity_field"]
    entity = value_at(record, entity_path)
    if _is_blank(entity):
        return _missing_field("period_open", entity_path)
    if context.period_calendar(str(entity), day):
        return RuleResult(True, "period_open", path, "an open period", period)
    return RuleResult(
        False,
        "period_open",
        path,
        "an open period",
        period,
        f"The accounting period of {day.isoformat()} ({period}) of {entity} is closed or not in its period calendar; "
        f"post the entry in the next open period, or ask finance to open {period}.",
    )


PERIOD_RULE = "period_open"
CLOSED_PERIOD_SUGGESTED_ACTION = (
    "Post the entry in the next open period of its legal entity (its date moves to that period's first day), or "
    "reject it. If the period should be open, finance reopens it (in the ERP when the ERP closed it) and replays."
)


def only_closed_period(failed_rules: Iterable[Mapping[str, Any]]) -> bool:
    """Whether every failed rule of an entry is the period check: the entry is a closed-period item, whose own
    decisions (post in the next open period, reject) apply; with any other failure it stays a policy item."""
    rules = [entry.get("rule") for entry in failed_rules]
    return bool(rules) and all(rule == PERIOD_RULE for rule in rules)


@register_rule(
    "required_fields",
    label="Required fields",
    description="Each listed path has a non-empty value.",
    params_schema={
        "type": "object",
        "properties": {"paths": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
        "required": ["paths"],
        "additionalProperties": False,
    },
)
def required_fields(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    missing = [path for path in params["paths"] if _is_blank(value_at(record, path))]
    if not missing:
        return RuleResult(True, "required_fields", "", params["paths"], None)
    return RuleResult(
        False,
        "required_fields",
        missing[0],
        params["paths"],
        missing,
        f"Missing {', '.join(missing)}; fill {'them' if len(missing) > 1 else 'it'} in the source system.",
    )


@register_rule(
    "amount_within_contract_remaining",
    label="Amount within the contract's remaining value",
    description="The amount does not exceed what is left on the contract.",
    params_schema={
        "type": "object",
        "properties": {
            "amount_field": _field_param("amount", "Path of the amount."),
            "contract_field": _field_param("contract_id", "Path of the contract id."),
        },
        "additionalProperties": False,
    },
)
def amount_within_contract_remaining(
    record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext
) -> RuleResult:
    rule, amount_path, contract_path = (
        "amount_within_contract_remaining",
        params["amount_field"],
        params["contract_field"],
    )
    contract = value_at(record, contract_path)
    if _is_blank(contract):
        return _missing_field(rule, contract_path)
    amount = _decimal(value_at(record, amount_path))
    if amount is None:
        shown = _shown(value_at(record, amount_path))
        return RuleResult(False, rule, amount_path, "a number", shown, f"{amount_path} is missing or not a number.")
    if context.contract_remaining is None:
        return _no_lookup(rule, amount_path, "contract remaining-value lookup")
    remaining = _decimal(context.contract_remaining(str(contract)))
    if remaining is None:
        message = f"Contract {contract} is unknown, so its remaining value cannot be checked; sync it first."
        return RuleResult(False, rule, contract_path, None, contract, message)
    if amount <= remaining:
        return RuleResult(True, rule, amount_path, remaining, amount)
    return RuleResult(
        False,
        rule,
        amount_path,
        remaining,
        amount,
        f"{amount} exceeds the {remaining} left on contract {contract}; amend the contract or reduce the amount.",
    )


@register_rule(
    "not_billed_before",
    label="Not billed before",
    description="The milestone has not been billed already.",
    params_schema={
        "type": "object",
        "properties": {"field": _field_param("milestone_id", "Path of the milestone id.")},
        "additionalProperties": False,
    },
)
def not_billed_before(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    return _membership_rule(
        rule="not_billed_before",
        record=record,
        path=params["field"],
        lookup=context.billed_milestone_ids,
        what="billed milestones",
        found=False,
        message="Milestone {value} was billed before; it is not billed twice. Reject this item or correct the id.",
    )


@register_rule(
    "client_accepted",
    label="Client accepted",
    description="The client has accepted the deliverable (milestone billing).",
    params_schema={
        "type": "object",
        "properties": {
            "field": _field_param("client_acceptance", "Path of the acceptance flag or status."),
            "accepted_values": {
                "type": "array",
                "items": {"type": ["string", "boolean"]},
                "minItems": 1,
                "default": [True, "accepted"],
            },
        },
        "additionalProperties": False,
    },
)
def client_accepted(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    path, accepted = params["field"], params["accepted_values"]
    value = value_at(record, path)
    # `True in [1]` is true in Python; compare types too so a 1 or "true" is not taken for acceptance by accident.
    if any(type(value) is type(ok) and value == ok for ok in accepted):
        return RuleResult(True, "client_accepted", path, accepted, value)
    return RuleResult(
        False,
        "client_accepted",
        path,
        accepted,
        _shown(value),
        f"The client has not accepted it ({path} is {_shown(value)!r}); record the acceptance, then replay.",
    )


@register_rule(
    "max_amount",
    label="Maximum amount",
    description="The amount is at most a fixed maximum.",
    params_schema={
        "type": "object",
        "properties": {
            "field": _field_param("amount", "Path of the amount."),
            "max": {"type": "number", "minimum": 0},
        },
        "required": ["max"],
        "additionalProperties": False,
    },
)
def max_amount(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    path, limit = params["field"], Decimal(str(params["max"]))
    amount = _decimal(value_at(record, path))
    if amount is None:
        shown = _shown(value_at(record, path))
        return RuleResult(False, "max_amount", path, limit, shown, f"{path} is missing or not a number.")
    if amount <= limit:
        return RuleResult(True, "max_amount", path, limit, amount)
    return RuleResult(
        False, "max_amount", path, limit, amount, f"{amount} is above the maximum of {limit}; split or approve it."
    )


@register_rule(
    "daily_hours_within_limit",
    label="Daily hours within the limit",
    description="A person's hours on one day, over all their entries the hub knows including this one, stay "
    "within the limit.",
    params_schema={
        "type": "object",
        "properties": {
            "max_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 24, "default": 12},
            "hours_field": _field_param("hours", "Path of the hours."),
            "resource_field": _field_param("resource_id", "Path of the person."),
            "date_field": _field_param("date", "Path of the work date (YYYY-MM-DD)."),
            "id_field": _field_param("id", "Path of the entry's id (its own earlier versions are not counted)."),
        },
        "additionalProperties": False,
    },
)
def daily_hours_within_limit(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    rule, hours_path = "daily_hours_within_limit", params["hours_field"]
    for path in (params["resource_field"], params["date_field"]):
        if _is_blank(value_at(record, path)):
            return _missing_field(rule, path)
    hours = _decimal(value_at(record, hours_path))
    if hours is None:
        shown = _shown(value_at(record, hours_path))
        return RuleResult(False, rule, hours_path, "a number", shown, f"{hours_path} is missing or not a number.")
    try:
        day = datetime.date.fromisoformat(str(value_at(record, params["date_field"]))[:10])
    except ValueError:
        date_path = params["date_field"]
        shown = value_at(record, date_path)
        return RuleResult(False, rule, date_path, "YYYY-MM-DD", shown, f"{date_path} is not a date; use YYYY-MM-DD.")
    if context.hours_booked is None:
        return _no_lookup(rule, hours_path, "booked-hours lookup")
    resource = str(value_at(record, params["resource_field"]))
    own_id = value_at(record, params["id_field"])
    others = _decimal(context.hours_booked(resource, day, "" if _is_blank(own_id) else str(own_id))) or Decimal(0)
    total = others + hours
    limit = Decimal(str(params["max_hours"]))
    if total <= limit:
        return RuleResult(True, rule, hours_path, limit, total)
    return RuleResult(
        False,
        rule,
        hours_path,
        limit,
        total,
        f"{resource} would have {total} hours on {day.isoformat()} ({others} already booked plus {hours}), above "
        f"the limit of {limit}; correct the hours in the PSA.",
    )


@register_rule(
    "receipt_required_above",
    label="Receipt above an amount",
    description="An expense above the amount has a receipt attached.",
    params_schema={
        "type": "object",
        "properties": {
            "amount": {"type": "number", "minimum": 0, "default": 25},
            "amount_field": _field_param("amount", "Path of the expense amount."),
            "receipt_field": _field_param("receipt_url", "Path of the receipt (a link or file id)."),
        },
        "additionalProperties": False,
    },
)
def receipt_required_above(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    rule, amount_path, receipt_path = "receipt_required_above", params["amount_field"], params["receipt_field"]
    amount = _decimal(value_at(record, amount_path))
    if amount is None:
        shown = _shown(value_at(record, amount_path))
        return RuleResult(False, rule, amount_path, "a number", shown, f"{amount_path} is missing or not a number.")
    threshold = Decimal(str(params["amount"]))
    receipt = value_at(record, receipt_path)
    if amount <= threshold or not _is_blank(receipt):
        return RuleResult(True, rule, receipt_path, "a receipt" if amount > threshold else None, _shown(receipt))
    return RuleResult(
        False,
        rule,
        receipt_path,
        "a receipt",
        None,
        f"The expense of {amount} is above {threshold} and has no receipt; attach the receipt in the PSA.",
    )


@register_rule(
    "currency_matches_entity",
    label="Currency matches the legal entity",
    description="The entry's currency is the legal entity's (its base currency or a rate card's currency).",
    params_schema={
        "type": "object",
        "properties": {
            "currency_field": _field_param("currency", "Path of the currency code."),
            "legal_entity_field": _field_param("legal_entity_code", "Path of the legal entity code."),
            "date_field": _field_param("date", "Path of the date (rate cards are effective-dated)."),
        },
        "additionalProperties": False,
    },
)
def currency_matches_entity(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    rule, currency_path = "currency_matches_entity", params["currency_field"]
    for path in (currency_path, params["legal_entity_field"], params["date_field"]):
        if _is_blank(value_at(record, path)):
            return _missing_field(rule, path)
    try:
        day = datetime.date.fromisoformat(str(value_at(record, params["date_field"]))[:10])
    except ValueError:
        date_path = params["date_field"]
        shown = value_at(record, date_path)
        return RuleResult(False, rule, date_path, "YYYY-MM-DD", shown, f"{date_path} is not a date; use YYYY-MM-DD.")
    if context.entity_currencies is None:
        return _no_lookup(rule, currency_path, "legal-entity currency lookup")
    entity = str(value_at(record, params["legal_entity_field"]))
    currency = str(value_at(record, currency_path))
    accepted = sorted(set(context.entity_currencies(entity, day)))
    if currency in accepted:
        return RuleResult(True, rule, currency_path, accepted, currency)
    return RuleResult(
        False,
        rule,
        currency_path,
        accepted,
        currency,
        f"The entry is in {currency} but legal entity {entity} books in {', '.join(accepted) or 'no known currency'}; "
        "correct the currency in the PSA or the entry's legal entity.",
    )


def rule_applies(entry: Mapping[str, Any], entity: str) -> bool:
    """Whether a policy's rule entry applies to records of `entity` (an entry without `entities` applies to all)."""
    entities = entry.get("entities") or []
    return not entities or entity in entities


def rules_evaluate(
    *, record: Mapping[str, Any], entries: Iterable[Mapping[str, Any]], context: RuleContext, entity: str = ""
) -> list[RuleResult]:
    """Run a policy's rule entries on one record, in order; every rule runs so the user sees every failure.
    With `entity`, entries limited to other entities are left out."""
    return [
        rule_get(entry["rule"]).run(record, entry.get("params", {}), context)
        for entry in entries
        if not entity or rule_applies(entry, entity)
    ]


__all__ = [
    "Rule",
    "RuleContext",
    "RuleResult",
    "register_rule",
    "rule_applies",
    "rule_entries_validate",
    "rule_get",
    "rule_list",
    "rules_evaluate",
    "value_at",
]
