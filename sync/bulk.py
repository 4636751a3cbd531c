"""Writing many rows' own values in one statement, cheaply.

Django's `bulk_update` builds one `CASE WHEN id = … THEN …` per row and field: for a hundred messages and
twenty fields, compiling that statement costs more CPU than the rest of the pipeline. `rows_update` sends
`UPDATE … FROM unnest(arrays)` on PostgreSQL and `WITH v AS (VALUES …) UPDATE … FROM v` on SQLite instead,
with the values prepared by each field as `save()` would prepare them. `insert_unless_conflict` is the
webhook's one-row INSERT, built once per process. `_locked` and `_chunks` are the claim helpers every
dispatcher shares (rows claimed with SKIP LOCKED, ids cut into task-sized batches): here, below the engine's
modules, so the dispatcher and the follow-up bus can both use them without importing each other.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connection, connections, models
from django.db.models import QuerySet
from django.utils import timezone

ROWS_PER_STATEMENT = 500


# Field classes whose database value is the Python value itself when it has this exact type (or is None):
# for them the bulk writers skip get_db_prep_save, which costs several calls per value (a fifth of a
# worker's time in batches of 500). Any other value, class or subclass goes through get_db_prep_save.
_SAME_VALUE_TYPES: dict[type[models.Field], type] = {
    models.CharField: str,
    models.TextField: str,
    models.SlugField: str,
    models.IntegerField: int,
    models.BigIntegerField: int,
    models.SmallIntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.BooleanField: bool,
}
_INTEGER_KEYS = (models.AutoField, models.BigAutoField, models.SmallAutoField)


@functools.cache
def _preparer(field: models.Field, vendor: str) -> Callable[[Any, Any], Any]:
    """A function of (value, connection) giving `field`'s database value, as get_db_prep_save would. Callers
    pass the thread's connection object itself: each attribute read through django.db.connection, a
    thread-local proxy, costs a lookup (a tenth of the pipeline worker's time when it was passed here)."""
    prepare = field.get_db_prep_save
    same: type | None = _SAME_VALUE_TYPES.get(type(field))
    if same is None and isinstance(field, models.ForeignKey) and type(field.target_field) in _INTEGER_KEYS:
        same = int
    if same is None and type(field) is models.DateTimeField and vendor == "postgresql":
        # psycopg takes an aware datetime as is (SQLite's backend turns it into text, so not there).
        def prepare_datetime(value: Any, conn: Any) -> Any:
            if value is None or (type(value) is datetime.datetime and value.tzinfo is not None):
                return value
            return prepare(value, conn)

        return prepare_datetime
    if same is None:
        return prepare
    kind = same

    def prepare_same(value: Any, conn: Any) -> Any:
        return value if value is None or type(value) is kind else prepare(value, conn)

    return prepare_same


def prepared(field: models.Field, value: Any) -> Any:
    conn = connections[DEFAULT_DB_ALIAS]
    return _preparer(field, conn.vendor)(value, conn)


def _execute(sql: str, params: Sequence[Any], *, fetch: bool = False) -> list[tuple[Any, ...]]:
    """Run one statement; its rows when `fetch`. On PostgreSQL the parameters are bound server-side: no
    quoting of every value in Python (a tenth of a worker's time for batches of arrays), and psycopg
    prepares a statement the process runs again and again (the webhook INSERT, a batch's UPDATE)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if fetch else []
    import psycopg

    # Django's cursor() first: it runs the connection health check and opens the connection if needed.
    with (
        connection.cursor() as django_cursor,
        connection.wrap_database_errors,
        psycopg.Cursor(django_cursor.cursor.connection) as cursor,
    ):
        cursor.execute(sql, params)
        return cursor.fetchall() if fetch else []


def _array_type(field: models.Field) -> str:
    # A key column has the type of the keys pointing at it (bigint for a BigAutoField), others their own.
    if field.primary_key:
        return f"{field.rel_db_type(connection)}[]"
    return f"{field.db_type(connection)}[]"


def rows_update(model: type[models.Model], objects: Sequence[Any], field_names: Sequence[str]) -> None:
    """Write `field_names` of each object to its row (by primary key), ROWS_PER_STATEMENT rows per statement.
    The objects are model instances or any objects with `pk` and the fields' attnames.

    On PostgreSQL the values go as one array per column, `UPDATE … FROM unnest(%s::type[], …)`: the statement
    has as many parameters as columns whatever the number of rows, so psycopg parses its text once (a
    statement with one parameter per value is parsed again on every call, which cost the delivery worker a
    fifth of its time). On SQLite (3.33+) `WITH v AS (VALUES …) UPDATE … FROM v`."""
    if not objects:
        return
    meta = model._meta
    fields = [cast(models.Field, meta.get_field(name)) for name in field_names]
    pk = meta.pk
    assert pk is not None
    table = connection.ops.quote_name(meta.db_table)
    columns = [connection.ops.quote_name(str(field.column)) for field in fields]
    key = connection.ops.quote_name(str(pk.column))
    assignments = ", ".join(f"{column} = v.c{index}" for index, column in enumerate(columns))
    names = ", ".join(["pk", *(f"c{index}" for index in range(len(columns)))])
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        arrays = ", ".join(f"%b::{_array_type(field)}" for field in [pk, *fields])
        sql = f"UPDATE {table} SET {assignments} FROM unnest({arrays}) AS v({names}) WHERE {table}.{key} = v.pk"  # noqa: S608
    row_sql = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
    for start in range(0, len(objects), ROWS_PER_STATEMENT):
        chunk = objects[start : start + ROWS_PER_STATEMENT]
        if postgresql:
            conn = connections[DEFAULT_DB_ALIAS]
            params: list[Any] = [[prepared(pk, obj.pk) for obj in chunk]]
            for field in fields:
                prepare = _preparer(field, conn.vendor)
                params.append([prepare(getattr(obj, field.attname), conn) for obj in chunk])
        else:
            params = []
            for obj in chunk:
                params.append(prepared(pk, obj.pk))
                for field in fields:
                    params.append(prepared(field, getattr(obj, field.attname)))
            sql = (
                f"WITH v({names}) AS (VALUES {', '.join([row_sql] * len(chunk))}) "  # noqa: S608 - names quoted
                f"UPDATE {table} SET {assignments} FROM v WHERE {table}.{key} = v.pk"
            )
        _execute(sql, params)


class _Computed:
    """A default computed on every insert (a timestamp, a new list), not once per process."""


COMPUTED = _Computed()


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    fields: tuple[models.Field, ...]
    prepared_defaults: tuple[Any, ...]  # per field: its default ready for the database, or COMPUTED


def _is_computed(field: models.Field) -> bool:
    return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False) or callable(field.default))


@functools.cache
def _insert_plan(
    model: type[models.Model], given: tuple[str, ...], conflict: tuple[str, ...], vendor: str
) -> _InsertPlan:
    # The given fields and every NOT NULL one (with its default); nullable fields left out stay NULL.
    fields = tuple(
        cast(models.Field, field)
        for field in model._meta.concrete_fields
        if not field.primary_key and (field.attname in given or not field.null)
    )
    quote = connection.ops.quote_name
    pk = model._meta.pk
    assert pk is not None
    conflict_columns = [str(cast(models.Field, model._meta.get_field(name)).column) for name in conflict]
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({', '.join(quote(column) for column in conflict_columns)}) DO NOTHING "
        f"RETURNING {quote(str(pk.column))}"
    )
    # A constant default is prepared once; the given values and computed defaults on every insert.
    prepared = tuple(
        COMPUTED
        if field.attname in given or _is_computed(field)
        else field.get_db_prep_save(field.get_default(), connection)
        for field in fields
    )
    return _InsertPlan(sql=sql, fields=fields, prepared_defaults=prepared)


def _computed_default(field: models.Field, now: datetime.datetime) -> Any:
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return now
    return field.get_default()


def insert_unless_conflict(model: type[models.Model], values: dict[str, Any], conflict: tuple[str, ...]) -> int | None:
    """INSERT one row of `model` from `values` (by attname; every other NOT NULL field gets its default) and
    return its id, or None when a row with the same `conflict` fields exists (then nothing is written).

    One statement whose SQL is built once per process: `save()` compiles its INSERT on every call, which on
    the webhook path costs more than the statement itself, and a conflict needs no exception or savepoint.
    On PostgreSQL it is bound server-side, so psycopg prepares it after a few calls."""
    conn = connections[DEFAULT_DB_ALIAS]
    plan = _insert_plan(model, tuple(values), conflict, conn.vendor)
    now = timezone.now()
    params = [
        default
        if default is not COMPUTED
        else _preparer(field, conn.vendor)(
            values[field.attname] if field.attname in values else _computed_default(field, now), conn
        )
        for field, default in zip(plan.fields, plan.prepared_defaults, strict=True)
    ]
    rows = _execute_idempotent(plan.sql, params)
    return int(rows[0][0]) if rows else None


def _execute_idempotent(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run a statement that may safely run twice (an INSERT … ON CONFLICT DO NOTHING) without Django's
    per-request health check, and run it once more on a new connection if the kept one turns out broken.

    The health check is a `SELECT 1` round trip before the first query of every request: on the webhook,
    whose only query is this INSERT, it was a quarter of the web process's time per request. A broken
    connection (a restarted server, a dropped idle connection) is found by the INSERT itself instead.
    Running it again is safe: if the first one was committed before the connection broke, the second
    inserts nothing and the caller answers as for a duplicate."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.in_atomic_block or conn.connection is None:
        return _execute(sql, params, fetch=True)
    conn.health_check_done = True  # type: ignore[attr-defined]
    try:
        return _execute(sql, params, fetch=True)
    except (OperationalError, InterfaceError):
        if conn.is_usable():
            raise
        conn.close()
        return _execute(sql, params, fetch=True)


def related_attach(objects: Sequence[models.Model], field_name: str) -> None:
    """Load the `field_name` foreign objects of `objects` in one query and give every object sharing a key
    the same instance. Cheaper than select_related for a batch pointing at a few rows: a joined row builds
    one instance per object, and a connected system decrypts its credentials for each of them."""
    field = cast(models.ForeignKey, objects[0]._meta.get_field(field_name)) if objects else None
    if field is None:
        return
    keys = {getattr(obj, field.attname) for obj in objects} - {None}
    shared = field.related_model._default_manager.in_bulk(keys) if keys else {}  # type: ignore[union-attr]
    for obj in objects:
        key = getattr(obj, field.attname)
        if key is not None:
            setattr(obj, field_name, shared[key])


def rows_insert(
    model: type[models.Model],
    objects: Sequence[models.Model],
    *,
    returning_ids: bool = False,
    ignore_conflicts: bool = False,
    unique_fields: Sequence[str] = (),
    update_fields: Sequence[str] = (),
) -> None:
    """INSERT new objects, ROWS_PER_STATEMENT rows per statement, as bulk_create does: with `returning_ids`
    each object gets its id; `ignore_conflicts` skips rows that conflict; `update_fields` (with the
    `unique_fields` of the constraint) updates the existing row instead.

    On PostgreSQL `INSERT … SELECT … FROM unnest(%s::type[], …)`: one parameter per column, whatever the number
    of rows (bulk_create's one parameter per value makes psycopg parse the statement's text on every call).
    Elsewhere bulk_create."""
    if not objects:
        return
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(
            objects,
            batch_size=ROWS_PER_STATEMENT,
            ignore_conflicts=ignore_conflicts,
            update_conflicts=bool(update_fields),
            unique_fields=list(unique_fields) or None,
            update_fields=list(update_fields) or None,
        )
        return
    assert not (returning_ids and ignore_conflicts), "a skipped row has no id to return"
    pk = model._meta.pk
    assert pk is not None
    fields = [cast(models.Field, field) for field in model._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    arrays = ", ".join(f"%b::{_array_type(field)}" for field in fields)
    names = [f"c{index}" for index in range(len(fields))]
    # In the arrays' order (ORDER BY the ordinality), so the ids the sequence hands out ascend in that order.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) "  # noqa: S608
        f"SELECT {', '.join(names)} FROM unnest({arrays}) WITH ORDINALITY AS v({', '.join(names)}, n) ORDER BY n"
    )
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    elif update_fields:
        meta = model._meta
        keys = ", ".join(quote(str(cast(models.Field, meta.get_field(name)).column)) for name in unique_fields)
        updated = [quote(str(cast(models.Field, meta.get_field(name)).column)) for name in update_fields]
        sql += f" ON CONFLICT ({keys}) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in updated)
    if returning_ids:
        sql += f" RETURNING {quote(str(pk.column))}"
    conn = connections[DEFAULT_DB_ALIAS]
    preparers = [(field, _preparer(field, conn.vendor)) for field in fields]
    for start in range(0, len(objects), ROWS_PER_STATEMENT):
        chunk = objects[start : start + ROWS_PER_STATEMENT]
        # pre_save as save() calls it: auto_now and auto_now_add timestamps are set here.
        params = [[prepare(field.pre_save(obj, True), conn) for obj in chunk] for field, prepare in preparers]
        new_ids = _execute(sql, params, fetch=returning_ids)
        if not returning_ids:
            continue
        for obj, (new_id,) in zip(chunk, sorted(new_ids), strict=True):
            obj.pk = new_id
            obj._state.adding = False
            obj._state.db = connection.alias


def _locked(queryset: QuerySet) -> QuerySet:
    # SKIP LOCKED lets two dispatchers share the work on PostgreSQL; SQLite serialises writers anyway.
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def _chunks(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
