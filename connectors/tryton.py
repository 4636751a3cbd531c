"""The Tryton ERP connector: a JSON-RPC client for Tryton 8.x and the `tryton_erp` connector type.

Tryton's JSON-RPC (measured in shared/reference/TRYTON.md):
- `POST /<db>/rpc/` with exactly {"id", "method", "params"}; `POST /rpc/` for server-level methods.
- Login with `common.db.login` → [user_id, session_key, bus_url]; later calls send
  `Authorization: Session base64(login:user_id:key)`. A bad password is HTTP 401, too many failed
  logins HTTP 429.
- Methods marked fresh_session (account.invoice.post, the pay wizard, account.move.post) need a
  session used in the last `[session] timeout` (300 s) and otherwise answer 401 and delete the
  session: the client logs in again before such a call when the session is older than that, and
  once more on any 401.
- Application errors come back with HTTP **200** and an `error` array: they are terminal (the same
  call fails the same way). 401/403/422 are terminal too; 429, 5xx and transport failures are retryable
  (classified by connectors.http).
- Dates, datetimes, timedeltas, Decimals and bytes travel as `{"__class__": ...}` objects.

Entities: client → party.party, project → project.work (invoiced on timesheets), time_entry →
timesheet.line, invoice → account.invoice (read side). Idempotency keys are stored in the ERP as the
text tag `hub:<key>`, searched before every create: a party identifier for clients, the first line of
the project's comment, and the end of the timesheet line's description (`<description> [hub:<key>]`, or
`hub:<key>` alone for a line without one; lines written before read `hub:<key> <note>` and are still found).
Tryton keeps no other writable text on a timesheet line (its uuid is read-only), and a second record (an
ir.note) would be a second transaction that a crash could separate from the line; the tag at the end keeps
the description readable as the PSA wrote it. Search-then-create is two transactions; the hub's per-key
delivery lock makes that safe.

A timesheet line is booked to the employee the payload names (`employee_id`: the hub's resource
cross-reference supplies it), never to a default one: a line without it is refused.

Voiding a time entry deletes the timesheet line while it is not invoiced. Tryton refuses negative
durations (`duration >= 0` is a field domain), so an invoiced line cannot be reversed with a
negative line: void raises a terminal error that tells finance to credit the invoice in Tryton.

Nothing secret is ever logged: each RPC logs its method name, outcome and duration, never params
(common.db.login carries the password) or headers (the session key).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from connectors.base import ChangeBatch, Connector, ConnectorCapabilityError, HealthResult, UpsertResult
from connectors.choices import SystemRole
from connectors.http import (
    RetryableConnectorError,
    SystemHttpClient,
    TargetRecordGoneError,
    TerminalConnectorError,
    classify_error,
    client_for,
)

logger = logging.getLogger(__name__)

DEFAULT_RPC_ROOT_PATH = "/rpc/"
DEFAULT_SESSION_TIMEOUT_SECONDS = 300
# Log in again this long before Tryton's session timeout, so a fresh_session call never races it.
FRESH_SESSION_MARGIN_SECONDS = 60
# Calls that Tryton only accepts from a session used within [session] timeout.
FRESH_SESSION_METHODS = frozenset(
    {
        "model.account.invoice.post",
        "model.account.move.post",
        "wizard.account.invoice.pay.create",
    }
)
BATCH_CHUNK = 500  # timesheet lines per create call: the measured sweet spot on SQLite (TRYTON.md)
SEARCH_CHUNK = 200  # keys per search: one OR clause per key, and SQLite limits expression depth
BATCH_TIMEOUT_SECONDS = 120.0
KEY_PATTERN = re.compile(r"^\S{1,200}$")
TAG_PREFIX = "hub:"


# --- wire format -------------------------------------------------------------------------------------


def to_wire(value: Any) -> Any:
    """Python values → Tryton's JSON: tagged objects for the types JSON has no word for."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            # Tryton stores naive UTC timestamps.
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dt.time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {"__class__": "bytes", "base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {str(key): to_wire(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_wire(item) for item in value]
    return value


def _from_wire_object(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "datetime":
        return dt.datetime(
            obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"], obj["second"], obj["microsecond"]
        )
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "time":
        return dt.time(obj["hour"], obj["minute"], obj["second"], obj["microsecond"])
    if kind == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def from_wire(text: bytes | str) -> Any:
    """Tryton's JSON → Python values (date, datetime, timedelta, Decimal, bytes)."""
    return json.loads(text, object_hook=_from_wire_object)


def jsonable(value: Any) -> Any:
    """Python values from Tryton → plain JSON for the hub's payloads (ISO dates, Decimal as string)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


# --- errors ------------------------------------------------------------------------------------------


class TrytonRpcError(TerminalConnectorError):
    """Tryton answered the call with an `error` array (HTTP 200): a UserError, an access error, a bug."""

    code = "tryton_rpc_error"
    title = "Tryton refused the call"

    def __init__(self, detail: str, *, fault: str = "", rpc_method: str = "", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.fault = fault
        self.rpc_method = rpc_method


class TrytonAuthError(TerminalConnectorError):
    """Tryton refused the login (HTTP 401): wrong user or password, or the user is inactive."""

    code = "connector_auth"
    title = "The connected system refused the hub's credentials"


def _rpc_error(error: Any, *, rpc_method: str, system_slug: str) -> TrytonRpcError:
    # UserError:  ["UserError", [message, description, domain]]
    # A bug:      [str(exception), traceback]   (the traceback stays out of the hub's messages)
    fault, message = "Error", ""
    if isinstance(error, list) and error:
        fault = str(error[0])
        args = error[1] if len(error) > 1 else ""
        if isinstance(args, list):
            message = " ".join(str(part) for part in args[:2] if isinstance(part, str) and part)
        elif fault.endswith(("Error", "Exception", "Warning")):
            message = str(args)
    detail = f"Tryton {fault} on {rpc_method}" + (f": {message}" if message else "")
    return TrytonRpcError(detail[:1000], fault=fault, rpc_method=rpc_method, system_slug=system_slug)


# --- the JSON-RPC client -----------------------------------------------------------------------------


@dataclass
class _Session:
    login: str
    user_id: int
    key: str = field(repr=False)
    last_used: float = 0.0
    context: dict[str, Any] | None = None

    def authorization(self) -> str:
        token = base64.b64encode(f"{self.login}:{self.user_id}:{self.key}".encode()).decode("ascii")
        return f"Session {token}"


# Sessions are shared by every connector instance of a process (a connector is built per operation):
# one login serves a whole worker. Keyed by the system, server, database, login and a digest of the
# password, so changed credentials log in again. Memory only: the key never reaches a cache or a log.
_sessions: dict[tuple[str, ...], _Session] = {}
_sessions_lock = threading.Lock()


def sessions_clear() -> None:
    """Forget every cached Tryton session (tests)."""
    with _sessions_lock:
        _sessions.clear()


class TrytonClient:
    """A Tryton JSON-RPC client bound to one database and user, over the hub's pooled HTTP client."""

    def __init__(
        self,
        *,
        http: SystemHttpClient,
        database: str,
        login: str,
        password: str,
        language: str = "en",
        rpc_root_path: str = DEFAULT_RPC_ROOT_PATH,
        session_timeout: float = DEFAULT_SESSION_TIMEOUT_SECONDS,
        context: Mapping[str, Any] | None = None,
        system_slug: str = "",
    ) -> None:
        self.http = http
        self.database = database
        self.login_name = login
        self._password = password
        self.language = language
        self.rpc_root_path = rpc_root_path
        self.session_timeout = session_timeout
        self.base_context = dict(context or {})
        self.system_slug = system_slug
        self._id = 0
        digest = hashlib.sha256(password.encode()).hexdigest()
        self._session_key = (system_slug, str(http.config.base_url), database, login, digest)

    def __repr__(self) -> str:
        return f"<TrytonClient {self.login_name}@{self.database} system={self.system_slug!r}>"

    @property
    def db_path(self) -> str:
        return f"/{self.database}/rpc/"

    # -- transport --

    def _envelope(self, method: str, params: Sequence[Any]) -> dict[str, Any]:
        self._id += 1
        # Exactly these three keys: with any other envelope trytond answers the bare result.
        return {"id": self._id, "method": method, "params": to_wire(list(params))}

    def _post(
        self, path: str, method: str, params: Sequence[Any], *, session: _Session | None, timeout: float | None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if session is not None:
            headers["Authorization"] = session.authorization()
        started = time.perf_counter()
        outcome = "transport error"
        try:
            response = self.http.request(
                "POST", path, json=self._envelope(method, params), headers=headers, timeout=timeout, check=False
            )
            outcome = f"http {response.status_code}"
            return response
        finally:
            logger.info(
                "tryton rpc",
                extra={
                    "system": self.system_slug,
                    "rpc_method": method,
                    "outcome": outcome,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )

    def _result(self, response: httpx.Response, method: str) -> Any:
        if response.status_code >= 400:
            raise classify_error(response, system_slug=self.system_slug)
        try:
            body = from_wire(response.content)
        except ValueError as exc:
            raise TerminalConnectorError(
                f"Tryton answered {method} with something that is not JSON", system_slug=self.system_slug
            ) from exc
        if not isinstance(body, dict):
            raise TerminalConnectorError(
                f"Tryton answered {method} without a JSON-RPC envelope", system_slug=self.system_slug
            )
        if body.get("error") is not None:
            raise _rpc_error(body["error"], rpc_method=method, system_slug=self.system_slug)
        return body.get("result")

    # -- server level, no login --

    def server_version(self) -> str:
        response = self._post(self.rpc_root_path, "common.server.version", [], session=None, timeout=None)
        return str(self._result(response, "common.server.version"))

    # -- session --

    def _cached_session(self) -> _Session | None:
        with _sessions_lock:
            return _sessions.get(self._session_key)

    def _drop_session(self, session: _Session | None) -> None:
        with _sessions_lock:
            if session is not None and _sessions.get(self._session_key) is session:
                del _sessions[self._session_key]

    def login(self) -> _Session:
        """common.db.login with the password; raises TrytonAuthError on 401 (429 is retryable)."""
        method = "common.db.login"
        response = self._post(
            self.db_path,
            method,
            [self.login_name, {"password": self._password}, self.language],
            session=None,
            timeout=None,
        )
        if response.status_code in (401, 403):
            raise TrytonAuthError(
                f"Tryton refused the login of the hub's user on database '{self.database}' "
                f"(HTTP {response.status_code})",
                status_code=response.status_code,
                system_slug=self.system_slug,
                hint="Check the system's credentials (user and password) and that the Tryton user is active.",
            )
        if response.status_code == 404:
            raise TerminalConnectorError(
                f"Tryton has no database '{self.database}' (HTTP 404 on login)",
                status_code=404,
                system_slug=self.system_slug,
                hint="Check the database setting, and that trytond preloads it (-d).",
            )
        result = self._result(response, method)
        try:
            user_id, key = int(result[0]), str(result[1])
        except (TypeError, ValueError, IndexError) as exc:
            raise TerminalConnectorError(
                "Tryton answered the login without a session", system_slug=self.system_slug
            ) from exc
        session = _Session(login=self.login_name, user_id=user_id, key=key, last_used=time.monotonic())
        with _sessions_lock:
            _sessions[self._session_key] = session
        return session

    def logout(self, session: _Session | None = None) -> None:
        """End a session (the cached one by default); best effort, it expires on its own anyway."""
        session = session or self._cached_session()
        if session is None:
            return
        self._drop_session(session)
        try:
            self._post(self.db_path, "common.db.logout", [], session=session, timeout=None)
        except RetryableConnectorError:
            logger.info("tryton logout failed", extra={"system": self.system_slug})

    def _session_for(self, method: str) -> _Session:
        session = self._cached_session()
        if session is None:
            return self.login()
        if method in FRESH_SESSION_METHODS:
            idle = time.monotonic() - session.last_used
            if idle > self.session_timeout - FRESH_SESSION_MARGIN_SECONDS:
                self._drop_session(session)
                return self.login()
        return session

    def call(self, method: str, params: Sequence[Any], *, timeout: float | None = None) -> Any:
        """One authenticated call; logs in when needed and once more if Tryton answers 401."""
        session = self._session_for(method)
        response = self._post(self.db_path, method, params, session=session, timeout=timeout)
        if response.status_code == 401:
            # Expired, logged out, timed out for a fresh_session method, or the server restarted.
            self._drop_session(session)
            session = self.login()
            response = self._post(self.db_path, method, params, session=session, timeout=timeout)
            if response.status_code == 401:
                raise TrytonAuthError(
                    f"Tryton refused {method} right after a fresh login (HTTP 401)",
                    status_code=401,
                    system_slug=self.system_slug,
                )
        result = self._result(response, method)
        session.last_used = time.monotonic()
        return result

    # -- model and wizard calls --

    def context(self) -> dict[str, Any]:
        """The user's preferences as the GUI sends them, with the connector's own context on top."""
        session = self._session_for("model.res.user.get_preferences")
        if session.context is None:
            preferences = self.call("model.res.user.get_preferences", [True, {}])
            session = self._session_for("model.res.user.get_preferences")
            session.context = {**(preferences or {}), **self.base_context}
        return dict(session.context)

    def execute(
        self,
        model: str,
        method: str,
        *args: Any,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """`model.<model>.<method>(*args, context)`: the context is always the last parameter."""
        ctx = {**self.context(), **(context or {})}
        return self.call(f"model.{model}.{method}", [*args, ctx], timeout=timeout)

    def search_read(
        self,
        model: str,
        domain: list[Any],
        fields: Sequence[str],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: Sequence[tuple[str, str]] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        order_list = [list(item) for item in order] if order else None
        return list(
            self.execute(model, "search_read", domain, offset, limit, order_list, list(fields), context=context) or []
        )

    def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        return list(self.execute(model, "read", list(ids), list(fields)) or [])

    def create(self, model: str, values: Sequence[Mapping[str, Any]], *, timeout: float | None = None) -> list[int]:
        return [int(i) for i in self.execute(model, "create", [dict(v) for v in values], timeout=timeout)]

    def write(self, model: str, ids: Sequence[int], values: Mapping[str, Any]) -> None:
        self.execute(model, "write", list(ids), dict(values))

    def delete(self, model: str, ids: Sequence[int]) -> None:
        self.execute(model, "delete", list(ids))

    def run_wizard(
        self, wizard: str, steps: Sequence[tuple[str, Mapping[str, Any]]], *, context: Mapping[str, Any]
    ) -> list[Any]:
        """Create the wizard, execute each (button state, form data) step, then delete it."""
        ctx = {**self.context(), **context}
        created = self.call(f"wizard.{wizard}.create", [ctx])
        session_id = created[0]
        results = []
        try:
            for state, data in steps:
                results.append(self.call(f"wizard.{wizard}.execute", [session_id, dict(data), state, ctx]))
        finally:
            self.call(f"wizard.{wizard}.delete", [session_id, ctx])
        return results


# --- idempotency tags --------------------------------------------------------------------------------


def _iso_date(value: Any) -> str:
    """A date Tryton answered (a date, or its ISO text) as YYYY-MM-DD; empty when there is none."""
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value or "")[:10]


def tag_for(key: str) -> str:
    """The text the hub leaves in the ERP record to find it again by its idempotency key."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise TerminalConnectorError(
            "An idempotency key for Tryton must be 1-200 characters without spaces",
            hint="The key is stored in the ERP record as 'hub:<key>'.",
        )
    return TAG_PREFIX + key


def _like_escape(text: str) -> str:
    # Tryton's like uses backslash as its escape character.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _tag_domain(field_name: str, tags: Sequence[str], separator: str) -> list[Any]:
    """Match a text field equal to a tag, or starting with the tag and the separator."""
    domain: list[Any] = ["OR", (field_name, "in", list(tags))]
    domain.extend((field_name, "like", _like_escape(tag) + separator + "%") for tag in tags)
    return domain


def _tag_of(text: str | None, separator: str) -> str | None:
    if not text or not text.startswith(TAG_PREFIX):
        return None
    return text.split(separator, 1)[0]


def _tagged_text(tag: str, note: str | None, separator: str) -> str:
    note = (note or "").strip()
    return f"{tag}{separator}{note}" if note else tag


def _line_text(tag: str, description: str | None) -> str:
    """A timesheet line's description: the PSA's text first, the hub's tag at the end (`<text> [hub:<key>]`)."""
    description = " ".join((description or "").split())
    return f"{description} [{tag}]" if description else tag


def _line_tag_of(text: str | None) -> str | None:
    """The hub tag of a timesheet line's description: `<text> [hub:<key>]`, `hub:<key>`, or the older
    `hub:<key> <note>`."""
    text = (text or "").strip()
    if text.endswith("]") and " [" + TAG_PREFIX in text:
        return text[text.rindex(" [" + TAG_PREFIX) + 2 : -1]
    return _tag_of(text, " ")


def line_key_of(description: Any) -> str:
    """The hub's idempotency key in a timesheet line's description (see _line_tag_of), or "" for a line the hub
    did not post: what reconciliation matches Tryton's lines with the ledger by."""
    tag = _line_tag_of(str(description or ""))
    return tag[len(TAG_PREFIX) :] if tag else ""


def _line_tag_domain(tags: Sequence[str]) -> list[Any]:
    """Timesheet lines whose description carries one of the tags, at its end or (older lines) at its start."""
    domain: list[Any] = ["OR", ("description", "in", list(tags))]
    for tag in tags:
        escaped = _like_escape(tag)
        domain.append(("description", "like", f"% [{escaped}]"))
        domain.append(("description", "like", escaped + " %"))
    return domain


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the connector -----------------------------------------------------------------------------------

TIME_ENTRY_FIELDS = ["id", "work", "employee", "date", "duration", "description", "invoice_line", "company"]
PROJECT_FIELDS = [
    "id",
    "timesheet_start_date",
    "timesheet_end_date",
    "name",
    "type",
    "party",
    "company",
    "product",
    "list_price",
    "project_invoice_method",
    "timesheet_works",
    "children",
    "comment",
    "amount_to_invoice",
    "invoiced_amount",
    "timesheet_duration",
]
CLIENT_FIELDS = ["id", "name", "code", "identifiers", "addresses", "customer_payment_term"]
INVOICE_FIELDS = [
    "id",
    "number",
    "state",
    "type",
    "party",
    "company",
    "currency",
    "invoice_date",
    "untaxed_amount",
    "tax_amount",
    "total_amount",
    "amount_to_pay",
    "reconciled",
    "lines",
    "move",
    "comment",
    "create_date",
    "write_date",
    "last_modified_at",
]
EXPENSE_FIELDS = [
    "id",
    "number",
    "state",
    "type",
    "party",
    "company",
    "invoice_date",
    "total_amount",
    "comment",
    "lines",
]
ENTITY_MODELS = {
    "client": ("party.party", CLIENT_FIELDS),
    "project": ("project.work", PROJECT_FIELDS),
    "time_entry": ("timesheet.line", TIME_ENTRY_FIELDS),
    "invoice": ("account.invoice", INVOICE_FIELDS),
    # A milestone's billing event is a customer invoice, an approved expense a supplier invoice (see below).
    "billing_event": ("account.invoice", [*INVOICE_FIELDS, "comment", "description", "reference"]),
    "expense": ("account.invoice", EXPENSE_FIELDS),
}
CHANGE_ENTITIES = frozenset({"invoice", "project", "client", "time_entry"})
UPSERT_ENTITIES = frozenset({"client", "project", "time_entry", "billing_event", "expense"})
INVOICE_ENTITIES = frozenset({"billing_event", "expense"})
INVOICE_TYPE = {"billing_event": "out", "expense": "in"}

# The contract of a project, kept in the project's comment below its hub tag as "<label>: <value>" lines:
# project.work has no field for a contract number, value, billing type, CRM opportunity or legal entity. The
# dates go to timesheet_start_date / timesheet_end_date, the rates to one task per role (list_price), and the
# currency is the company's (docs/workflow-opportunity-and-client.md lists what holds what).
CONTRACT_LINES = (
    ("code", "Code"),
    ("contract_number", "Contract"),
    ("opportunity_ref", "Opportunity"),
    ("legal_entity", "Legal entity"),
    ("billing_type", "Billing type"),
    ("contract_value", "Contract value"),
    ("currency", "Currency"),
    ("starts_on", "Start"),
    ("ends_on", "End"),
    ("rate_card", "Rate card"),
)
# Billing types Tryton invoices from timesheets; the others are invoiced by the hub (milestone invoices).
TIMESHEET_BILLED = frozenset({"time_and_materials"})


def contract_text(payload: Mapping[str, Any]) -> str:
    """The contract lines the project's comment carries (only the fields the payload has)."""
    lines = [f"{label}: {payload[name]}" for name, label in CONTRACT_LINES if payload.get(name) not in (None, "")]
    return "\n".join(lines)


def contract_parse(comment: str | None) -> dict[str, str]:
    """The contract fields read back from a project's comment (see `contract_text`)."""
    labels = {label: name for name, label in CONTRACT_LINES}
    found: dict[str, str] = {}
    for line in (comment or "").splitlines()[1:]:
        label, sep, value = line.partition(": ")
        if sep and label in labels and labels[label] not in found:
            found[labels[label]] = value.strip()
    return found


class TrytonConnector(Connector):
    """Tryton 8.x over JSON-RPC: clients, projects and approved time in; invoices and payments out."""

    name = "tryton_erp"
    label = "Tryton ERP (JSON-RPC)"
    role_hint = SystemRole.ERP
    description = "Tryton 8.x over JSON-RPC: parties, projects, timesheet lines, invoices and payments."
    sensitive_parameters = frozenset({"user", "password"})
    capabilities = frozenset(
        {"health_check", "fetch_changes", "get", "find", "upsert", "update", "upsert_batch", "void"}
    )
    # Tryton refuses negative durations: a correction voids the posted lines and posts the entry again.
    posts_negative_lines = False
    # timesheet.line.employee is required: an entry whose person has no employee here waits for one.
    requires_employee = True
    parameter_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["database", "company_id"],
        "properties": {
            "database": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9_.-]+$",
                "description": "Tryton database name; calls go to /<database>/rpc/.",
            },
            "company_id": {"type": "integer", "minimum": 1, "description": "company.company id put in the context."},
            "product_id": {
                "type": "integer",
                "minimum": 1,
                "description": "Service product (UoM hour) billed on new projects; its list price is the rate.",
            },
            "payment_term_id": {
                "type": "integer",
                "minimum": 1,
                "description": "Customer payment term of new clients.",
            },
            "payment_method_id": {
                "type": "integer",
                "minimum": 1,
                "description": "Payment method used to pay invoices.",
            },
            "language": {"type": "string", "pattern": "^[a-z]{2}(_[A-Z]{2})?$", "default": "en"},
            "rpc_root_path": {
                "type": "string",
                "pattern": "^/",
                "default": DEFAULT_RPC_ROOT_PATH,
                "description": "Server-level JSON-RPC path (common.server.version): /rpc/ on trytond 8.x.",
            },
            "session_timeout_seconds": {
                "type": "integer",
                "minimum": 60,
                "default": DEFAULT_SESSION_TIMEOUT_SECONDS,
                "description": "Tryton's [session] timeout: fresh_session calls log in again past it.",
            },
            "page_size": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            "timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 120,
                "default": 10,
                "description": "Read timeout of each call, in seconds (batches and invoicing get more).",
            },
        },
    }

    def __init__(self, *, system: Any, credentials: Mapping[str, Any] | None = None) -> None:
        super().__init__(system=system, credentials=credentials)
        self._client: TrytonClient | None = None
        self._timesheet_work_of_project: dict[int, int] = {}
        self._company_cache: dict[str, Any] = {}

    # -- plumbing --

    @property
    def slug(self) -> str:
        return str(getattr(self.system, "slug", ""))

    @property
    def client(self) -> TrytonClient:
        if self._client is None:
            user = self.credentials.get("user")
            password = self.credentials.get("password")
            if not user or not password:
                raise TrytonAuthError(
                    f"System '{self.slug}' has no Tryton user or password in its credentials",
                    system_slug=self.slug,
                    hint="Set credentials.user and credentials.password of the system.",
                )
            context: dict[str, Any] = {"company": int(self.settings["company_id"])}
            self._client = TrytonClient(
                http=client_for(self.system),
                database=str(self.settings["database"]),
                login=str(user),
                password=str(password),
                language=str(self.settings.get("language", "en")),
                rpc_root_path=str(self.settings.get("rpc_root_path", DEFAULT_RPC_ROOT_PATH)),
                session_timeout=float(self.settings.get("session_timeout_seconds", DEFAULT_SESSION_TIMEOUT_SECONDS)),
                context=context,
                system_slug=self.slug,
            )
        return self._client

    def _model(self, entity: str, supported: frozenset[str] | None = None) -> tuple[str, list[str]]:
        if entity not in ENTITY_MODELS or (supported is not None and entity not in supported):
            offered = ", ".join(sorted(supported or ENTITY_MODELS))
            raise ConnectorCapabilityError(
                f"Connector '{self.name}' does not handle entity '{entity}' here; it handles: {offered}."
            )
        return ENTITY_MODELS[entity]

    def _company(self) -> int:
        return int(self.settings["company_id"])

    def _employee(self, payload: Mapping[str, Any]) -> int:
        # Only the line's own employee: a default employee would book one person's time (and cost) to another.
        employee = payload.get("employee_id")
        try:
            return int(str(employee).strip())
        except (TypeError, ValueError):
            raise TerminalConnectorError(
                f"No Tryton employee for the timesheet line (employee_id {employee!r})",
                system_slug=self.slug,
                hint="Link the person to their Tryton employee under Workflows → Resources, then replay the entry.",
            ) from None

    def _product(self, payload: Mapping[str, Any]) -> int:
        product = payload.get("product_id") or self.settings.get("product_id")
        if not product:
            raise TerminalConnectorError(
                "No service product for the project: set product_id on the project or the system",
                system_slug=self.slug,
            )
        return int(product)

    # -- operations --

    def health_check(self) -> HealthResult:
        """Log in with the system's credentials (a fresh login, not a cached session) and read the version."""
        started = time.perf_counter()
        version = self.client.server_version()
        previous = self.client._cached_session()
        self.client.login()
        if previous is not None:
            # A periodic health check must not leave one more open session in Tryton each time.
            self.client.logout(previous)
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        return HealthResult(
            ok=True,
            status_code=200,
            duration_ms=duration_ms,
            message=f"Tryton {version}: logged in to database '{self.client.database}'",
        )

    def get(self, entity: str, external_id: str) -> dict[str, Any]:
        model, fields = self._model(entity)
        if entity == "project":
            fields = [*fields, "status.progress", "status.name"]
        rows = self.client.search_read(model, [("id", "=", int(external_id))], fields, limit=1)
        if not rows:
            raise TerminalConnectorError(
                f"Tryton has no {model} with id {external_id}", status_code=404, system_slug=self.slug
            )
        record = rows[0]
        if entity == "project":
            record["timesheet_work_id"] = (record.get("timesheet_works") or [None])[0]
            # The hub's project lifecycle word: a work in a status of full progress (Done) is closed.
            status = record.pop("status.", None) or {}
            record["status_name"] = status.get("name")
            record["status"] = "closed" if (status.get("progress") or 0) >= 1 else "active"
            record.update(self._contract_of(record))
        if entity == "invoice":
            self._add_invoice_projects([record])
        return jsonable(record)

    def find(self, entity: str, idempotency_key: str) -> dict[str, Any] | None:
        self._model(entity, UPSERT_ENTITIES)
        found = self._find_many(entity, [idempotency_key])
        record = found.get(idempotency_key)
        return jsonable(record) if record is not None else None

    def _find_many(self, entity: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Idempotency key → the ERP record carrying its tag."""
        model, fields = self._model(entity, UPSERT_ENTITIES)
        tags = {tag_for(key): key for key in keys}
        found: dict[str, dict[str, Any]] = {}
        # A time entry's key is searched by three clauses (see _line_tag_domain): fewer keys per search.
        size = SEARCH_CHUNK // 2 if entity == "time_entry" else SEARCH_CHUNK
        for chunk in _chunks(list(tags), size):
            if entity == "client":
                rows = self.client.search_read(
                    model, [("identifiers.code", "in", list(chunk))], [*fields, "identifiers.code"]
                )
                for row in rows:
                    for identifier in row.get("identifiers.") or []:
                        if identifier.get("code") in tags:
                            found[tags[identifier["code"]]] = row
                continue
            if entity == "time_entry":
                text_field, domain = "description", _line_tag_domain(chunk)
            else:
                text_field, domain = "comment", _tag_domain("comment", chunk, "\n")
            if entity in INVOICE_ENTITIES:
                domain = [domain, ("type", "=", INVOICE_TYPE[entity]), ("company", "=", self._company())]
            rows = self.client.search_read(model, domain, fields, order=[("id", "ASC")])
            for row in rows:
                # SQLite's LIKE ignores case: compare the tag exactly.
                text = row.get(text_field)
                tag = _line_tag_of(text) if entity == "time_entry" else _tag_of(text, "\n")
                if tag in tags and tags[tag] not in found:
                    found[tags[tag]] = row
        return found

    def upsert(self, entity: str, payload: dict[str, Any], idempotency_key: str) -> UpsertResult:
        self._model(entity, UPSERT_ENTITIES)
        if entity == "client":
            return self._upsert_client(payload, idempotency_key)
        if entity == "project":
            return self._upsert_project(payload, idempotency_key)
        if entity == "billing_event":
            return self._upsert_billing_invoice(payload, idempotency_key)
        if entity == "expense":
            return self._upsert_expense(payload, idempotency_key)
        return self.upsert_many(entity, [(payload, idempotency_key)])[0]

    def update(self, entity: str, external_id: str, payload: dict[str, Any]) -> UpsertResult:
        """Write the payload onto the party, project or timesheet line the hub created (its hub tag kept); a
        record deleted in Tryton raises TargetRecordGoneError, an invoiced line refuses the correction."""
        model, fields = self._model(entity, UPSERT_ENTITIES)
        extra = ["identifiers.code"] if entity == "client" else []
        rows = self.client.search_read(model, [("id", "=", int(external_id))], [*fields, *extra], limit=1)
        if not rows:
            raise TargetRecordGoneError(
                f"Tryton has no {model} with id {external_id} any more (deleted in the ERP)",
                status_code=404,
                system_slug=self.slug,
                hint="Re-create the record in Tryton, or skip the update if it was deleted on purpose.",
            )
        existing = rows[0]
        if entity in INVOICE_ENTITIES:
            return self._invoice_change(entity, existing, payload)
        if entity == "client":
            name = str(payload.get("name") or "").strip()
            if not name:
                raise TerminalConnectorError("A client needs a name", system_slug=self.slug)
            address = {k: payload[k] for k in ("street", "city", "postal_code") if payload.get(k)}
            return self._client_change(existing, name, address)
        if entity == "project":
            name = str(payload.get("name") or "").strip()
            client_id = payload.get("client_id") or existing.get("party")
            if not name or not client_id:
                raise TerminalConnectorError("A project needs a name and a client_id (party id)", system_slug=self.slug)
            list_price = payload.get("list_price")
            price = Decimal(str(list_price)) if list_price is not None else None
            return self._project_change(existing, payload, name, int(client_id), self._product(payload), price)
        # A time entry keeps the tag it was created with, so a retry of its first delivery still finds it.
        tag = _line_tag_of(existing.get("description")) or ""
        key = tag[len(TAG_PREFIX) :] if tag else f"line-{external_id}"
        return self._correct_time_entry(existing, self._time_entry_values(payload, key))

    def void(self, entity: str, external_id: str) -> None:
        """Withdraw a time entry (delete its timesheet line unless it is invoiced, see the module docstring), or
        close a project (its work moves to the status of full progress, Done); a project already gone is fine."""
        if entity == "project":
            self._close_project(int(external_id))
            return
        if entity in INVOICE_ENTITIES:
            self._invoice_withdraw(entity, int(external_id))
            return
        if entity != "time_entry":
            raise ConnectorCapabilityError(
                f"Connector '{self.name}' can only void time_entry and project, not '{entity}'."
            )
        rows = self.client.search_read("timesheet.line", [("id", "=", int(external_id))], TIME_ENTRY_FIELDS, limit=1)
        if not rows:
            return  # already gone: voiding twice is a no-op
        if rows[0].get("invoice_line"):
            raise TerminalConnectorError(
                f"Timesheet line {external_id} is already invoiced and cannot be withdrawn",
                status_code=409,
                system_slug=self.slug,
                hint="Tryton refuses negative durations: credit the invoice line in Tryton instead.",
            )
        self.client.delete("timesheet.line", [int(external_id)])

    def records_list(
        self,
        entity: str,
        *,
        cursor: str | None = None,
        filters: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> ChangeBatch:
        """One page of the timesheet lines Tryton holds now, by id, for reconciliation: `filters` `date_from` and
        `date_to` (YYYY-MM-DD, inclusive); the cursor is the last id read. Each line carries `hours` (its duration)
        and `project_id` (the project.work its timesheet work belongs to, when it has one)."""
        if entity != "time_entry":
            raise ConnectorCapabilityError(f"Connector '{self.name}' lists only time_entry, not '{entity}'.")
        wanted = dict(filters or {})
        size = max(1, int(page_size or self.settings.get("page_size", 100)))
        domain: list[Any] = [("company", "=", self._company())]
        if wanted.get("date_from"):
            domain.append(("date", ">=", dt.date.fromisoformat(str(wanted["date_from"]))))
        if wanted.get("date_to"):
            domain.append(("date", "<=", dt.date.fromisoformat(str(wanted["date_to"]))))
        if cursor:
            domain.append(("id", ">", int(cursor)))
        rows = self.client.search_read(
            "timesheet.line", domain, [*TIME_ENTRY_FIELDS, "work.origin"], limit=size + 1, order=[("id", "ASC")]
        )
        has_more = len(rows) > size
        rows = rows[:size]
        records = []
        for row in rows:
            origin = str((row.pop("work.", None) or {}).get("origin") or "")
            model, _, origin_id = origin.partition(",")
            record = jsonable(row)
            record["hours"] = str(Decimal(str(record.get("duration") or 0)) / 3600)
            record["project_id"] = origin_id if model == "project.work" else ""
            records.append(record)
        return ChangeBatch(
            records=records, next_cursor=str(rows[-1]["id"]) if has_more and rows else None, has_more=has_more
        )

    def fetch_changes(self, entity: str, cursor: str | None) -> ChangeBatch:
        """Records changed after the cursor, oldest first, one page; the cursor is "<timestamp>|<id>".

        Ordered by Tryton's last_modified_at (write date, or create date for a record never written) and
        id, so records sharing a timestamp are neither skipped nor repeated across pages.
        """
        model, fields = self._model(entity, CHANGE_ENTITIES)
        page_size = int(self.settings.get("page_size", 100))
        domain: list[Any] = []
        if cursor:
            try:
                stamp_text, last_id_text = cursor.rsplit("|", 1)
                stamp, last_id = dt.datetime.fromisoformat(stamp_text), int(last_id_text)
            except ValueError as exc:
                raise TerminalConnectorError(f"Invalid Tryton cursor {cursor!r}", system_slug=self.slug) from exc
            domain = [
                "OR",
                ("last_modified_at", ">", stamp),
                [("last_modified_at", "=", stamp), ("id", ">", last_id)],
            ]
        if entity == "invoice":
            # Customer invoices of this system's company only: each legal entity's system pulls its own.
            scope = [("type", "=", "out"), ("company", "=", self._company())]
            domain = [domain, *scope] if domain else scope
        wanted = list(dict.fromkeys([*fields, "last_modified_at"]))
        rows = self.client.search_read(
            model, domain, wanted, limit=page_size + 1, order=[("last_modified_at", "ASC"), ("id", "ASC")]
        )
        has_more = len(rows) > page_size
        rows = rows[:page_size]
        if entity == "invoice":
            self._add_invoice_projects(rows)
        next_cursor = cursor
        if rows:
            last = rows[-1]
            next_cursor = f"{last['last_modified_at'].isoformat()}|{last['id']}"
        return ChangeBatch(records=[jsonable(row) for row in rows], next_cursor=next_cursor, has_more=has_more)

    def accounting_periods(self) -> list[dict[str, Any]]:
        """The company's standard accounting periods (account.period of its fiscal years; adjustment periods
        overlap them and are left out), as the hub's period pull reads them: {external_id, name, legal_entity,
        start_date, end_date, state} with Tryton's state (open, closed or locked) and no legal entity (the
        system's own)."""
        rows = self.client.search_read(
            "account.period",
            [["fiscalyear.company", "=", self._company()], ["type", "=", "standard"]],
            ["id", "name", "start_date", "end_date", "state"],
            order=[("start_date", "ASC"), ("id", "ASC")],
        )
        return [
            {
                "external_id": str(row["id"]),
                "name": str(row.get("name") or ""),
                "legal_entity": "",
                "start_date": _iso_date(row.get("start_date")),
                "end_date": _iso_date(row.get("end_date")),
                "state": str(row.get("state") or ""),
            }
            for row in rows
        ]

    def _close_project(self, project_id: int) -> None:
        rows = self.client.search_read("project.work", [("id", "=", project_id)], ["id", "status"], limit=1)
        if not rows:
            return
        done = self.client.search_read(
            "project.work.status", [("progress", "=", 1)], ["id", "name"], limit=1, order=[("sequence", "ASC")]
        )
        if not done:
            raise TerminalConnectorError(
                "Tryton has no project status of full progress (Done) to close the project with",
                status_code=409,
                system_slug=self.slug,
                hint="Add a project work status with progress 1 in Tryton (Project → Configuration → Statuses).",
            )
        # Tryton completes a work only once its children are complete: the project's tasks (one per rate-card
        # role) are closed first, in the same way.
        open_tasks = [
            row["id"]
            for row in self.client.search_read(
                "project.work", [("parent", "child_of", [project_id]), ("id", "!=", project_id)], ["id", "status"]
            )
            if row.get("status") != done[0]["id"]
        ]
        if open_tasks:
            self.client.write("project.work", open_tasks, {"progress": 1.0, "status": done[0]["id"]})
        if rows[0].get("status") != done[0]["id"]:
            # Tryton refuses Done below full progress: the work is declared complete with it.
            self.client.write("project.work", [project_id], {"progress": 1.0, "status": done[0]["id"]})

    # -- clients --

    def _upsert_client(self, payload: Mapping[str, Any], key: str) -> UpsertResult:
        name = str(payload.get("name") or "").strip()
        if not name:
            raise TerminalConnectorError("A client needs a name", system_slug=self.slug)
        address = {k: payload[k] for k in ("street", "city", "postal_code") if payload.get(k)}
        existing = self._find_many("client", [key]).get(key)
        if existing:
            return self._client_change(existing, name, address)
        values: dict[str, Any] = {
            "name": name,
            # type None: a free-form identifier, which Tryton does not validate.
            "identifiers": [["create", [{"type": None, "code": tag_for(key)}]]],
            "addresses": [["create", [address or {}]]],
        }
        payment_term = payload.get("payment_term_id") or self.settings.get("payment_term_id")
        if payment_term:
            values["customer_payment_term"] = int(payment_term)
        mechanisms = [{"type": kind, "value": payload[kind]} for kind in ("email", "phone") if payload.get(kind)]
        if mechanisms:
            values["contact_mechanisms"] = [["create", mechanisms]]
        (party_id,) = self.client.create("party.party", [values])
        return UpsertResult(external_id=str(party_id), created=True, payload={"id": party_id})

    def _client_change(self, existing: Mapping[str, Any], name: str, address: Mapping[str, Any]) -> UpsertResult:
        values: dict[str, Any] = {}
        if existing["name"] != name:
            values["name"] = name
        if address:
            if existing.get("addresses"):
                values["addresses"] = [["write", existing["addresses"][:1], dict(address)]]
            else:
                values["addresses"] = [["create", [dict(address)]]]
        if values:
            self.client.write("party.party", [existing["id"]], values)
        return UpsertResult(external_id=str(existing["id"]), created=False, payload={"id": existing["id"]})

    # -- projects --

    def _list_price(self, product_id: int) -> Any:
        # create() runs no on_change: ask Tryton what the GUI would fill in for the product.
        changes = self.client.execute(
            "project.work", "on_change", {"product": product_id, "company": self._company()}, ["product"]
        )
        price = (changes or {}).get("list_price")
        if price is None:
            raise TerminalConnectorError(f"Product {product_id} has no list price in Tryton", system_slug=self.slug)
        return price

    def _project_result(self, project_id: int, created: bool) -> UpsertResult:
        (project,) = self.client.read("project.work", [project_id], ["timesheet_works", "children", "list_price"])
        tasks = (
            self.client.read("project.work", project["children"], ["name", "timesheet_works"])
            if project["children"]
            else []
        )
        timesheet_works = list(project["timesheet_works"])
        if timesheet_works:
            self._timesheet_work_of_project[project_id] = timesheet_works[0]
        return UpsertResult(
            external_id=str(project_id),
            created=created,
            payload=jsonable(
                {
                    "id": project_id,
                    "timesheet_works": timesheet_works,
                    "timesheet_work_id": timesheet_works[0] if timesheet_works else None,
                    "list_price": project["list_price"],
                    "tasks": [
                        {"id": t["id"], "name": t["name"], "timesheet_work_id": (t["timesheet_works"] or [None])[0]}
                        for t in tasks
                    ],
                }
            ),
        )

    def _upsert_project(self, payload: Mapping[str, Any], key: str) -> UpsertResult:
        name = str(payload.get("name") or "").strip()
        client_id = payload.get("client_id")
        if not name or not client_id:
            raise TerminalConnectorError("A project needs a name and a client_id (party id)", system_slug=self.slug)
        product = self._product(payload)
        list_price = payload.get("list_price")
        price = Decimal(str(list_price)) if list_price is not None else None
        self._check_contract_currency(payload)
        existing = self._find_many("project", [key]).get(key)
        if existing:
            return self._project_change(existing, payload, name, int(client_id), product, price)
        if price is None:
            price = self._list_price(product)
        return self._project_create(payload, key, name, int(client_id), product, price)

    def _company_currency(self) -> str:
        if "currency_code" not in self._company_cache:
            rows = self.client.read("company.company", [self._company()], ["currency.code"])
            self._company_cache["currency_code"] = str(((rows[0].get("currency.") or {}) if rows else {}).get("code"))
        return self._company_cache["currency_code"]

    def _check_contract_currency(self, payload: Mapping[str, Any]) -> None:
        """A Tryton project books in its company's currency: a contract in another one is refused, since every
        amount on it (list prices, invoices) would silently change currency."""
        currency = str(payload.get("currency") or "").upper()
        if currency and currency != self._company_currency():
            raise TerminalConnectorError(
                f"The contract is in {currency} but Tryton company {self._company()} books in "
                f"{self._company_currency()}",
                status_code=422,
                system_slug=self.slug,
                hint="Point this connected system at the legal entity's company (settings.company_id), or correct "
                "the contract's currency in the CRM.",
            )

    def _project_note(self, payload: Mapping[str, Any]) -> str:
        """The comment below the tag: the contract lines, then the free note."""
        return "\n".join(part for part in (contract_text(payload), str(payload.get("note") or "").strip()) if part)

    def _merged_comment(self, comment: str | None, payload: Mapping[str, Any]) -> str:
        """The comment with the payload's contract lines over the ones it has (a field the payload leaves out
        keeps its value), and the payload's note, else the free text it had."""
        lines = (comment or "").splitlines()
        tag, body = (lines[0], lines[1:]) if lines else ("", [])
        labels = {label for _, label in CONTRACT_LINES}
        free = "\n".join(line for line in body if line.partition(": ")[0] not in labels).strip()
        merged = {**contract_parse(comment), **{k: v for k, v in payload.items() if v not in (None, "")}}
        note = str(payload.get("note") or "").strip() or free
        return "\n".join(part for part in (tag, contract_text(merged), note) if part)

    def _contract_values(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """project.work fields that hold the contract: the invoice method from its billing type, and its dates
        as the timesheet's start and end (time outside the contract is refused by Tryton)."""
        values: dict[str, Any] = {}
        billing = payload.get("billing_type")
        if payload.get("invoice_method"):
            values["project_invoice_method"] = payload["invoice_method"]
        elif billing:
            values["project_invoice_method"] = "timesheet" if billing in TIMESHEET_BILLED else "manual"
        for source, target in (("starts_on", "timesheet_start_date"), ("ends_on", "timesheet_end_date")):
            if payload.get(source):
                values[target] = dt.date.fromisoformat(str(payload[source])[:10])
        return values

    def _rate_tasks(self, payload: Mapping[str, Any], product: int, have: set[str]) -> list[dict[str, Any]]:
        """One task per rate card role the project lacks, billed at the role's rate (its list_price)."""
        tasks = []
        for rate in payload.get("rates") or []:
            role = str(rate.get("role") or "").strip()
            if role and role not in have and rate.get("bill_rate") not in (None, ""):
                tasks.append(self._task_values(role, product, Decimal(str(rate["bill_rate"]))))
        return tasks

    def _contract_of(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The contract fields of a project read back: the comment's lines, the company's currency, the dates."""
        contract: dict[str, Any] = dict(contract_parse(record.get("comment")))
        contract["currency"] = self._company_currency()
        for source, target in (("timesheet_start_date", "starts_on"), ("timesheet_end_date", "ends_on")):
            if record.get(source):
                contract[target] = _iso_date(record[source])
        return contract

    def _project_change(
        self,
        existing: Mapping[str, Any],
        payload: Mapping[str, Any],
        name: str,
        client_id: int,
        product: int,
        price: Decimal | None,
    ) -> UpsertResult:
        values: dict[str, Any] = {}
        if existing["name"] != name:
            values["name"] = name
        if int(existing["party"] or 0) != int(client_id):
            values["party"] = int(client_id)
        if price is not None and existing.get("list_price") != price:
            values["list_price"] = price
        existing_tasks = (
            {t["name"] for t in self.client.read("project.work", existing["children"], ["name"])}
            if existing["children"]
            else set()
        )
        new_tasks = [
            self._task_values(t, product, existing["list_price"])
            for t in payload.get("tasks") or []
            if t not in existing_tasks
        ]
        new_tasks += self._rate_tasks(payload, product, existing_tasks | {t["name"] for t in new_tasks})
        if new_tasks:
            values["children"] = [["create", new_tasks]]
        contract = self._contract_values(payload)
        if existing.get("invoiced_amount") and "project_invoice_method" in contract:
            contract.pop("project_invoice_method")  # Tryton freezes the method once something is invoiced
        for field_name, value in contract.items():
            if existing.get(field_name) != value:
                values[field_name] = value
        comment = self._merged_comment(existing.get("comment"), payload)
        if comment != existing.get("comment"):
            values["comment"] = comment
        if values:
            self.client.write("project.work", [existing["id"]], values)
        return self._project_result(existing["id"], created=False)

    def _project_create(
        self, payload: Mapping[str, Any], key: str, name: str, client_id: int, product: int, price: Any
    ) -> UpsertResult:
        values = {
            "name": name,
            "type": "project",
            "company": self._company(),
            "party": int(client_id),
            "project_invoice_method": "timesheet",
            "product": product,
            "list_price": price,
            "timesheet_available": True,
            "comment": _tagged_text(tag_for(key), self._project_note(payload), "\n"),
        }
        values.update(self._contract_values(payload))
        names = [str(t) for t in payload.get("tasks") or []]
        tasks = [self._task_values(t, product, price) for t in names]
        tasks += self._rate_tasks(payload, product, set(names))
        if tasks:
            values["children"] = [["create", tasks]]
        (project_id,) = self.client.create("project.work", [values])
        return self._project_result(project_id, created=True)

    def _task_values(self, name: str, product: int, price: Any) -> dict[str, Any]:
        return {
            "name": str(name),
            "type": "task",
            "company": self._company(),
            "product": product,
            "list_price": price,
            "timesheet_available": True,
        }

    def _timesheet_work(self, payload: Mapping[str, Any]) -> int:
        if payload.get("work_id"):
            return int(payload["work_id"])
        project_id = payload.get("project_id")
        if not project_id:
            raise TerminalConnectorError(
                "A time entry needs project_id (project.work) or work_id (timesheet.work)", system_slug=self.slug
            )
        project_id = int(project_id)
        if project_id not in self._timesheet_work_of_project:
            rows = self.client.read("project.work", [project_id], ["timesheet_works"])
            works = rows[0]["timesheet_works"] if rows else []
            if not works:
                raise TerminalConnectorError(
                    f"Project {project_id} is not open to timesheets in Tryton (no timesheet work)",
                    system_slug=self.slug,
                    hint="Set timesheet_available on the project in Tryton.",
                )
            self._timesheet_work_of_project[project_id] = works[0]
        return self._timesheet_work_of_project[project_id]

    # -- time entries --

    def _time_entry_values(self, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        try:
            if payload.get("duration_seconds") is not None:
                duration = dt.timedelta(seconds=float(payload["duration_seconds"]))
            else:
                duration = dt.timedelta(hours=float(Decimal(str(payload["hours"]))))
            day = payload["date"]
            day = dt.date.fromisoformat(day) if isinstance(day, str) else day
        except (KeyError, ValueError, ArithmeticError) as exc:
            raise TerminalConnectorError(
                f"A time entry needs a date (YYYY-MM-DD) and hours or duration_seconds ({exc})", system_slug=self.slug
            ) from exc
        if duration < dt.timedelta(0):
            raise TerminalConnectorError(
                "Tryton refuses negative durations: withdraw the entry (void) instead", system_slug=self.slug
            )
        return {
            "company": self._company(),
            "employee": self._employee(payload),
            "work": self._timesheet_work(payload),
            "date": day,
            "duration": duration,
            # The PSA's description (`note` is the name older callers used); the key rides at its end.
            "description": _line_text(tag_for(key), payload.get("description") or payload.get("note")),
        }

    def upsert_many(
        self, entity: str, items: Sequence[tuple[Mapping[str, Any], str]], *, may_exist: bool = True
    ) -> list[UpsertResult]:
        """Post many time entries: one search for their keys, then one create call per 500 new lines.

        Results come back in the order of `items`. A key repeated within the batch is posted once.
        An existing line that differs is corrected in place unless it is already invoiced. With
        `may_exist=False` (no key was ever sent: the engine's first attempts) the search is skipped: Tryton
        cannot refuse a repeated key, so the search is what makes retries safe, and a first attempt has
        nothing to find.
        """
        if entity != "time_entry":
            raise ConnectorCapabilityError(f"Connector '{self.name}' batches only time_entry, not '{entity}'.")
        values_by_key: dict[str, dict[str, Any]] = {}
        for payload, key in items:
            if key not in values_by_key:
                values_by_key[key] = self._time_entry_values(payload, key)
        existing = self._find_many("time_entry", list(values_by_key)) if may_exist else {}
        results: dict[str, UpsertResult] = {}
        for key, row in existing.items():
            results[key] = self._correct_time_entry(row, values_by_key[key])
        new_keys = [key for key in values_by_key if key not in existing]
        for chunk in _chunks(new_keys, BATCH_CHUNK):
            ids = self.client.create(
                "timesheet.line", [values_by_key[key] for key in chunk], timeout=BATCH_TIMEOUT_SECONDS
            )
            for key, line_id in zip(chunk, ids, strict=True):
                results[key] = UpsertResult(external_id=str(line_id), created=True, payload={"id": line_id})
        out: list[UpsertResult] = []
        seen: set[str] = set()
        for _, key in items:
            result = results[key]
            if key in seen and result.created:
                result = UpsertResult(external_id=result.external_id, created=False, payload=result.payload)
            seen.add(key)
            out.append(result)
        return out

    def upsert_batch(
        self, entity: str, items: Sequence[tuple[Mapping[str, Any], str]], *, may_exist: bool = True
    ) -> Sequence[UpsertResult | Exception]:
        """The batch operation: timesheet.line.create takes a list, so the lines go in one call per 500. Expenses
        are supplier invoices with lines of their own: one create each, a refusal answered per item."""
        if entity == "expense":
            answers: list[UpsertResult | Exception] = []
            for payload, key in items:
                try:
                    answers.append(self._upsert_expense(payload, key))
                except TerminalConnectorError as exc:
                    answers.append(exc)
            return answers
        return self.upsert_many(entity, items, may_exist=may_exist)

    def _correct_time_entry(self, row: Mapping[str, Any], values: Mapping[str, Any]) -> UpsertResult:
        changed = {
            name: values[name]
            for name in ("work", "employee", "date", "duration", "description")
            if row.get(name) != values[name]
        }
        if changed:
            if row.get("invoice_line"):
                raise TerminalConnectorError(
                    f"Timesheet line {row['id']} is already invoiced; the correction cannot be applied",
                    status_code=409,
                    system_slug=self.slug,
                    hint="Credit the invoice line in Tryton, then post the corrected entry under a new key.",
                )
            self.client.write("timesheet.line", [row["id"]], changed)
        return UpsertResult(
            external_id=str(row["id"]), created=False, payload={"id": row["id"], "updated": bool(changed)}
        )

    def employees_list(self) -> list[dict[str, str]]:
        """The company's active employees (company.employee) by name: what a person picks from when linking a PSA
        person to the employee their time is booked to."""
        rows = self.client.search_read(
            "company.employee",
            [("company", "=", self._company())],
            ["id", "rec_name"],
            order=[("id", "ASC")],
        )
        employees = [{"id": str(row["id"]), "name": str(row.get("rec_name") or row["id"])} for row in rows]
        return sorted(employees, key=lambda employee: employee["name"].lower())

    # -- invoices (helpers for the billing flows, the tests and the demo) --

    def _add_invoice_projects(self, invoices: list[dict[str, Any]]) -> None:
        """Add `projects` (project.work ids) to invoices, found through their invoiced timesheet lines."""
        if not invoices:
            return
        ids = [row["id"] for row in invoices]
        lines = self.client.search_read(
            "timesheet.line", [("invoice_line.invoice", "in", ids)], ["invoice_line.invoice", "work.origin"]
        )
        projects: dict[int, set[int]] = {}
        for line in lines:
            invoice = (line.get("invoice_line.") or {}).get("invoice")
            origin = (line.get("work.") or {}).get("origin") or ""
            if invoice and isinstance(origin, str) and origin.startswith("project.work,"):
                projects.setdefault(invoice, set()).add(int(origin.split(",", 1)[1]))
        for row in invoices:
            hub_project = _invoice_refs(row.get("comment")).get("project")
            if hub_project and hub_project.isdigit():
                projects.setdefault(row["id"], set()).add(int(hub_project))
            row["projects"] = sorted(projects.get(row["id"], ()))
        self._add_invoice_status_refs(invoices)

    def _add_invoice_status_refs(self, invoices: list[dict[str, Any]]) -> None:
        """What the invoice status flow maps (docs/workflow-billing.md): `client_ref` (the canonical client id
        the party was created under, from its hub identifier), `project_id`, `project_ref` (the CRM opportunity)
        and `legal_entity` (from the project's contract lines), `currency` (its code), `status` (Tryton's state),
        `amount` (total), `posted_at`, `paid_at` (the date it was reconciled) and `updated_at`."""
        parties = sorted({int(row["party"]) for row in invoices if row.get("party")})
        client_refs: dict[int, str] = {}
        for party in self.client.read("party.party", parties, ["identifiers.code"]) if parties else []:
            for identifier in party.get("identifiers.") or []:
                key = str(identifier.get("code") or "")[len(TAG_PREFIX) :] if identifier.get("code") else ""
                kind, _, rest = key.partition(":")
                if kind == "client" and ":" in rest:
                    client_refs[int(party["id"])] = rest.split(":", 1)[1]
                    break
        project_ids = sorted({row["projects"][0] for row in invoices if row.get("projects")})
        contracts = {
            int(row["id"]): contract_parse(row.get("comment"))
            for row in (self.client.read("project.work", project_ids, ["comment"]) if project_ids else [])
        }
        currencies = sorted({int(row["currency"]) for row in invoices if row.get("currency")})
        codes = {
            int(row["id"]): row["code"]
            for row in (self.client.read("currency.currency", currencies, ["code"]) if currencies else [])
        }
        for row in invoices:
            project = row["projects"][0] if row.get("projects") else None
            contract = contracts.get(project, {}) if project else {}
            posted = row.get("state") in ("posted", "paid")
            row.update(
                client_ref=client_refs.get(int(row.get("party") or 0), ""),
                project_id=str(project or ""),
                project_ref=contract.get("opportunity_ref", ""),
                legal_entity=contract.get("legal_entity", ""),
                currency_code=codes.get(int(row.get("currency") or 0), ""),
                status=row.get("state"),
                amount=row.get("total_amount"),
                posted_at=row.get("invoice_date") if posted else None,
                paid_at=row.get("reconciled") if row.get("state") == "paid" else None,
                updated_at=row.get("last_modified_at"),
            )

    def _project_tree(self, project_id: int) -> list[dict[str, Any]]:
        return self.client.search_read(
            "project.work",
            ["OR", ("id", "=", project_id), ("parent", "child_of", [project_id])],
            ["id", "timesheet_works", "amount_to_invoice"],
        )

    def invoice_project(self, project_id: int | str) -> list[int]:
        """Invoice what the project has to invoice; returns the ids of the invoices it created (maybe none)."""
        project_id = int(project_id)
        (project,) = self.client.read("project.work", [project_id], ["amount_to_invoice"])
        if not project["amount_to_invoice"]:
            # The button refuses a project with nothing to invoice; nothing to do is not an error here.
            return []
        works = [w for row in self._project_tree(project_id) for w in row["timesheet_works"]]
        before = self._invoices_of_works(works)
        self.client.execute("project.work", "invoice", [project_id], timeout=BATCH_TIMEOUT_SECONDS)
        return sorted(self._invoices_of_works(works) - before)

    def _invoices_of_works(self, works: Sequence[int]) -> set[int]:
        if not works:
            return set()
        lines = self.client.search_read(
            "timesheet.line",
            [("work", "in", list(works)), ("invoice_line", "!=", None)],
            ["invoice_line.invoice"],
        )
        invoices = ((line.get("invoice_line.") or {}).get("invoice") for line in lines)
        return {int(invoice) for invoice in invoices if invoice}

    def post_invoice(self, invoice_id: int | str) -> dict[str, Any]:
        """Post a draft invoice (a fresh_session call: the client logs in again if its session is idle)."""
        self.client.execute("account.invoice", "post", [int(invoice_id)], timeout=BATCH_TIMEOUT_SECONDS)
        return self.get("invoice", str(invoice_id))

    def pay_invoice(
        self,
        invoice_id: int | str,
        *,
        amount: Decimal | None = None,
        payment_method_id: int | None = None,
        date: dt.date | None = None,
    ) -> dict[str, Any]:
        """Pay a posted invoice with the account.invoice.pay wizard (the whole amount by default)."""
        invoice_id = int(invoice_id)
        method = payment_method_id or self.settings.get("payment_method_id")
        if not method:
            raise TerminalConnectorError(
                "No payment method: set payment_method_id on the system", system_slug=self.slug
            )
        (invoice,) = self.client.read(
            "account.invoice", [invoice_id], ["amount_to_pay", "currency", "company", "party", "account", "number"]
        )
        start = {
            "amount": amount if amount is not None else invoice["amount_to_pay"],
            "currency": invoice["currency"],
            "company": invoice["company"],
            "date": date or dt.date.today(),
            "invoice_account": invoice["account"],
            "payee": invoice["party"],
            "payees": [invoice["party"]],
            "payment_method": int(method),
            "description": f"Payment {invoice['number'] or invoice_id}",
        }
        context = {"active_model": "account.invoice", "active_id": invoice_id, "active_ids": [invoice_id]}
        self.client.run_wizard("account.invoice.pay", [("start", {}), ("choice", {"start": start})], context=context)
        return self.get("invoice", str(invoice_id))

    # -- contracts, milestone invoices and expenses --
    #
    # A milestone's billing event is a customer invoice (account.invoice, type out) of the project's party, one
    # line of the milestone's amount on the company's revenue account; it is left in draft or posted, as the
    # payload's `post` says (the flow's sync policy decides). An approved expense is a supplier invoice (type
    # in) of the employee's party, one line on the company's expense account, in draft for accounts payable to
    # check and pay: Tryton records a reimbursable cost that way (account_invoice is installed; expense claims,
    # purchases and analytic accounts are not). Both carry the hub tag as the first line of their comment and
    # the project as "Project: <id>" below it, which is how billing_events() and pulled invoices find it.

    def contract_find(self, code: str) -> dict[str, Any] | None:
        """The project (contract) of the company whose contract lines name `code`, as get() reads it, or None."""
        code = str(code or "").strip()
        if not code:
            return None
        escaped = _like_escape(code)
        rows = self.client.search_read(
            "project.work",
            [
                ("company", "=", self._company()),
                ("type", "=", "project"),
                ["OR", ("comment", "like", f"%\nCode: {escaped}"), ("comment", "like", f"%\nCode: {escaped}\n%")],
            ],
            ["id", "comment"],
            order=[("id", "ASC")],
        )
        for row in rows:
            if contract_parse(row.get("comment")).get("code") == code:
                return self.get("project", str(row["id"]))
        return None

    def billing_events(self, project_id: int | str) -> list[dict[str, Any]]:
        """The project's milestone invoices the hub made (not cancelled): id, amount, milestone_ref, state."""
        rows = self.client.search_read(
            "account.invoice",
            [
                ("company", "=", self._company()),
                ("type", "=", "out"),
                ("state", "!=", "cancelled"),
                [
                    "OR",
                    ("comment", "like", f"%\nProject: {int(project_id)}"),
                    ("comment", "like", f"%\nProject: {int(project_id)}\n%"),
                ],
            ],
            ["id", "number", "state", "untaxed_amount", "comment"],
            order=[("id", "ASC")],
        )
        events = []
        for row in rows:
            refs = _invoice_refs(row.get("comment"))
            if refs.get("project") == str(int(project_id)):
                events.append(
                    {
                        "id": row["id"],
                        "number": row.get("number"),
                        "state": row.get("state"),
                        "amount": str(row.get("untaxed_amount")),
                        "milestone_ref": refs.get("milestone", ""),
                    }
                )
        return events

    def _invoice_accounts(self) -> dict[str, int]:
        """The company's default receivable and payable accounts and the service category's revenue and expense
        accounts (company-dependent values, read in the company's context)."""
        if "accounts" not in self._company_cache:
            (config,) = self.client.read(
                "account.configuration", [1], ["default_account_receivable", "default_account_payable"]
            )
            (product,) = self.client.read("product.product", [self._product({})], ["account_category"])
            category = product.get("account_category")
            accounts = {
                "receivable": config.get("default_account_receivable"),
                "payable": config.get("default_account_payable"),
            }
            if category:
                (row,) = self.client.read("product.category", [int(category)], ["account_revenue", "account_expense"])
                accounts.update(revenue=row.get("account_revenue"), expense=row.get("account_expense"))
            missing = sorted(kind for kind in ("receivable", "payable", "revenue", "expense") if not accounts.get(kind))
            if missing:
                raise TerminalConnectorError(
                    f"Tryton company {self._company()} has no {', '.join(missing)} account for invoices",
                    system_slug=self.slug,
                    hint="Set the default accounts (Accounting → Configuration) and the revenue and expense accounts "
                    "of the system's product category for this company, e.g. with tryton/setup.sh.",
                )
            self._company_cache["accounts"] = {kind: int(value) for kind, value in accounts.items() if value}
        return self._company_cache["accounts"]

    def _journal(self, kind: str) -> int:
        """The journal of the type Tryton books customer (revenue) or supplier (expense) invoices in; create()
        runs no on_change, so the invoice names it itself."""
        cache_key = f"journal:{kind}"
        if cache_key not in self._company_cache:
            rows = self.client.search_read(
                "account.journal", [("type", "=", kind)], ["id"], limit=1, order=[("id", "ASC")]
            )
            if not rows:
                raise TerminalConnectorError(
                    f"Tryton has no {kind} journal to book invoices in",
                    system_slug=self.slug,
                    hint="Add one under Accounting → Configuration → Journals.",
                )
            self._company_cache[cache_key] = int(rows[0]["id"])
        return int(self._company_cache[cache_key])

    def _amount(self, payload: Mapping[str, Any], what: str) -> Decimal:
        currency = str(payload.get("currency") or "").upper()
        if currency and currency != self._company_currency():
            raise TerminalConnectorError(
                f"The {what} is in {currency} but Tryton company {self._company()} books in {self._company_currency()}",
                status_code=422,
                system_slug=self.slug,
                hint="Send it to the ERP system of the legal entity whose currency it is, or correct its currency.",
            )
        try:
            amount = Decimal(str(payload["amount"])).quantize(Decimal("0.01"))
        except (KeyError, ArithmeticError, ValueError) as exc:
            raise TerminalConnectorError(f"The {what} needs an amount ({exc})", system_slug=self.slug) from exc
        if amount <= 0:
            raise TerminalConnectorError(f"The {what}'s amount must be above zero, not {amount}", system_slug=self.slug)
        return amount

    def _invoice_date(self, payload: Mapping[str, Any]) -> dt.date:
        day = payload.get("date")
        try:
            return dt.date.fromisoformat(str(day)[:10]) if day else dt.date.today()
        except ValueError as exc:
            raise TerminalConnectorError(f"Invalid date {day!r} (YYYY-MM-DD)", system_slug=self.slug) from exc

    def _party_invoicing(self, party_id: int) -> tuple[int, int | None]:
        """The party's invoice address (its first) and customer payment term."""
        rows = self.client.read("party.party", [party_id], ["addresses", "customer_payment_term"])
        if not rows or not rows[0].get("addresses"):
            raise TerminalConnectorError(
                f"Party {party_id} has no address to invoice", system_slug=self.slug, hint="Add one in Tryton."
            )
        return int(rows[0]["addresses"][0]), rows[0].get("customer_payment_term")

    def _invoice_result(self, invoice_id: int, created: bool) -> UpsertResult:
        (row,) = self.client.read("account.invoice", [invoice_id], ["number", "state", "total_amount"])
        return UpsertResult(
            external_id=str(invoice_id),
            created=created,
            payload=jsonable(
                {
                    "id": invoice_id,
                    "number": row.get("number"),
                    "state": row.get("state"),
                    "total_amount": row.get("total_amount"),
                }
            ),
        )

    def _upsert_billing_invoice(self, payload: Mapping[str, Any], key: str) -> UpsertResult:
        """A milestone's customer invoice, created once per key; posted when the payload says `post`."""
        amount = self._amount(payload, "billing event")
        project_id = int(payload.get("project_id") or 0)
        existing = self._find_many("billing_event", [key]).get(key)
        if existing is None:
            rows = self.client.read("project.work", [project_id], ["party", "name", "comment"]) if project_id else []
            if not rows or not rows[0].get("party"):
                raise TerminalConnectorError(
                    f"Tryton has no project {project_id or '(none)'} with a party to invoice",
                    status_code=404,
                    system_slug=self.slug,
                )
            project = rows[0]
            party = int(project["party"])
            address, term = self._party_invoicing(party)
            accounts = self._invoice_accounts()
            description = str(payload.get("description") or "Milestone")[:200]
            refs = [f"Project: {project_id}"]
            if payload.get("milestone_ref"):
                refs.append(f"Milestone: {payload['milestone_ref']}")
            values: dict[str, Any] = {
                "type": "out",
                "company": self._company(),
                "journal": self._journal("revenue"),
                "party": party,
                "invoice_address": address,
                "account": accounts["receivable"],
                "invoice_date": self._invoice_date(payload),
                "description": description,
                "reference": contract_parse(project.get("comment")).get("code") or project["name"][:100],
                "comment": "\n".join([tag_for(key), *refs]),
                "lines": [
                    [
                        "create",
                        [
                            {
                                "type": "line",
                                "account": accounts["revenue"],
                                "quantity": 1.0,
                                "unit_price": amount,
                                "description": f"{description} ({project['name']})"[:500],
                            }
                        ],
                    ]
                ],
            }
            payment_term = term or self.settings.get("payment_term_id")
            if payment_term:
                values["payment_term"] = int(payment_term)
            (invoice_id,) = self.client.create("account.invoice", [values])
            created = True
        else:
            invoice_id, created = int(existing["id"]), False
            if existing.get("state") == "draft":
                self._invoice_change("billing_event", existing, payload)
        if payload.get("post"):
            (row,) = self.client.read("account.invoice", [invoice_id], ["state"])
            if row["state"] in ("draft", "validated"):
                self._post_invoice(invoice_id)
        return self._invoice_result(invoice_id, created)

    def _post_invoice(self, invoice_id: int) -> None:
        """Post the invoice. A milestone dated in the past would give a payment date in the past, which Tryton
        asks a person to confirm: the payment term counts from today instead (payment_term_date), the invoice
        keeps its date."""
        (row,) = self.client.read("account.invoice", [invoice_id], ["invoice_date", "payment_term_date"])
        today = dt.date.today()
        if (row.get("payment_term_date") or row.get("invoice_date") or today) < today:
            self.client.write("account.invoice", [invoice_id], {"payment_term_date": today})
        self.client.execute("account.invoice", "post", [invoice_id], timeout=BATCH_TIMEOUT_SECONDS)

    def _upsert_expense(self, payload: Mapping[str, Any], key: str) -> UpsertResult:
        """An approved expense as a draft supplier invoice of the employee's party, created once per key."""
        existing = self._find_many("expense", [key]).get(key)
        if existing is not None:
            return self._invoice_change("expense", existing, payload)
        amount = self._amount(payload, "expense")
        employee = payload.get("employee_id")
        try:
            (row,) = self.client.read("company.employee", [int(str(employee))], ["party"])
        except (TypeError, ValueError):
            raise TerminalConnectorError(
                f"No Tryton employee for the expense (employee_id {employee!r})",
                system_slug=self.slug,
                hint="Link the person to their Tryton employee under Workflows → Resources, then replay the entry.",
            ) from None
        party = int(row["party"])
        address, _ = self._party_invoicing(party)
        accounts = self._invoice_accounts()
        refs = [f"Project: {int(payload['project_id'])}"] if payload.get("project_id") else []
        if payload.get("cost_code"):
            refs.append(f"Cost code: {payload['cost_code']}")
        description = str(payload.get("description") or "Expense")[:200]
        values = {
            "type": "in",
            "company": self._company(),
            "journal": self._journal("expense"),
            "party": party,
            "invoice_address": address,
            "account": accounts["payable"],
            "invoice_date": self._invoice_date(payload),
            "reference": str(payload.get("source_ref") or key)[:100],
            "description": description,
            "comment": "\n".join([tag_for(key), *refs]),
            "lines": [["create", [self._expense_line(amount, description, accounts)]]],
        }
        (invoice_id,) = self.client.create("account.invoice", [values])
        return self._invoice_result(invoice_id, True)

    @staticmethod
    def _expense_line(amount: Decimal, description: str, accounts: Mapping[str, int]) -> dict[str, Any]:
        return {
            "type": "line",
            "account": accounts["expense"],
            "quantity": 1.0,
            "unit_price": amount,
            "description": description[:500],
        }

    def _invoice_change(self, entity: str, existing: Mapping[str, Any], payload: Mapping[str, Any]) -> UpsertResult:
        """Correct a draft invoice's amount, date and description in place; a posted one is left as Tryton holds
        it (a correction of a posted invoice is a credit note, which finance makes in Tryton)."""
        invoice_id = int(existing["id"])
        rows = self.client.read("account.invoice", [invoice_id], ["state", "invoice_date", "description", "lines"])
        invoice = rows[0]
        if invoice["state"] != "draft":
            if entity == "expense" and payload.get("amount") is not None:
                amount = self._amount(payload, "expense")
                (current,) = self.client.read("account.invoice", [invoice_id], ["untaxed_amount"])
                if Decimal(str(current["untaxed_amount"])) != amount:
                    raise TerminalConnectorError(
                        f"Supplier invoice {invoice_id} of the expense is already {invoice['state']}; "
                        "the correction cannot be applied",
                        status_code=409,
                        system_slug=self.slug,
                        hint="Credit the supplier invoice in Tryton, then post the corrected expense under a new key.",
                    )
            return self._invoice_result(invoice_id, False)
        what = "expense" if entity == "expense" else "billing event"
        amount = self._amount(payload, what)
        description = str(payload.get("description") or invoice.get("description") or "")[:200]
        values: dict[str, Any] = {}
        day = self._invoice_date(payload)
        if invoice.get("invoice_date") != day:
            values["invoice_date"] = day
        if description and invoice.get("description") != description:
            values["description"] = description
        lines = self.client.read("account.invoice.line", list(invoice["lines"]), ["unit_price", "quantity"])
        if len(lines) == 1 and (
            Decimal(str(lines[0]["unit_price"])) != amount or float(lines[0]["quantity"] or 0) != 1.0
        ):
            values["lines"] = [["write", [lines[0]["id"]], {"unit_price": amount, "quantity": 1.0}]]
        if values:
            self.client.write("account.invoice", [invoice_id], values)
        return self._invoice_result(invoice_id, False)

    def _invoice_withdraw(self, entity: str, invoice_id: int) -> None:
        """Withdraw the hub's invoice: a draft one is deleted, a posted one cancelled (Tryton books the reversal);
        a paid one is refused. One already gone is fine."""
        rows = self.client.search_read(
            "account.invoice", [("id", "=", invoice_id), ("type", "=", INVOICE_TYPE[entity])], ["id", "state"], limit=1
        )
        if not rows or rows[0]["state"] == "cancelled":
            return
        state = rows[0]["state"]
        if state in ("draft", "validated"):
            if state == "validated":
                self.client.execute("account.invoice", "draft", [invoice_id])
            self.client.delete("account.invoice", [invoice_id])
            return
        if state == "paid":
            raise TerminalConnectorError(
                f"Invoice {invoice_id} is already paid and cannot be withdrawn",
                status_code=409,
                system_slug=self.slug,
                hint="Make a credit note in Tryton and settle it with the party.",
            )
        self.client.execute("account.invoice", "cancel", [invoice_id])


def _invoice_refs(comment: str | None) -> dict[str, str]:
    """ "Project: <id>" and "Milestone: <ref>" from an invoice comment the hub wrote."""
    refs: dict[str, str] = {}
    for line in (comment or "").splitlines()[1:]:
        label, sep, value = line.partition(": ")
        if sep and label in ("Project", "Milestone") and label.lower() not in refs:
            refs[label.lower()] = value.strip()
    return refs
