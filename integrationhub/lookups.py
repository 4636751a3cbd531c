"""Looking many keys up in a table that a bulk load is filling, with a plan that does not depend on statistics.

`filter(key__in=[500 keys], system=…)` lets PostgreSQL choose the plan from the table's statistics. While a
batch run fills a table faster than ANALYZE follows (or where autovacuum is off), the planner believes the
system's rows are few, reads all of them through the first column of the (system, key) index and filters
them by key: a second per page of 500 at 270,000 messages, growing with the table. `ids_by_key` asks one
index probe per key instead (a LATERAL subquery with LIMIT 1 cannot be turned into a scan of the table),
so a page costs the same at the millionth row as at the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from django.db import connection, models


def ids_by_key(model: type[models.Model], key_field: str, keys: Iterable[str], **equals: Any) -> dict[str, Any]:
    """The primary key of the row holding each of `keys` in `key_field`, among rows whose fields equal
    `equals` (field name or attname = value); keys no row holds are left out, as are empty keys."""
    wanted = sorted({key for key in keys if key})
    if not wanted:
        return {}
    manager = model._default_manager
    if connection.vendor != "postgresql":
        # SQLite probes an index per key by itself once a partial index on non-empty keys may serve: the
        # exclude() is that index's own condition, written as Django writes it.
        rows = (
            manager.filter(**equals, **{f"{key_field}__in": wanted})
            .exclude(**{key_field: ""})
            .order_by()
            .values_list(key_field, "pk")
        )
        return dict(rows)
    meta = model._meta
    quote = connection.ops.quote_name
    key = quote(str(cast(models.Field, meta.get_field(key_field)).column))
    conditions = [f"t.{key} = k", f"t.{key} <> ''"]  # the second lets a partial index on non-empty keys serve
    params: list[Any] = [wanted]
    for name, value in equals.items():
        field = cast(models.Field, meta.get_field(name))
        conditions.append(f"t.{quote(str(field.column))} = %s")
        params.append(field.get_db_prep_value(value.pk if isinstance(value, models.Model) else value, connection))
    pk = quote(str(cast(models.Field, meta.pk).column))
    sql = (
        f"SELECT k, hit.id FROM unnest(%s::text[]) AS k CROSS JOIN LATERAL ("  # noqa: S608 - quoted names only
        f"SELECT t.{pk} AS id FROM {quote(meta.db_table)} t WHERE {' AND '.join(conditions)} LIMIT 1) AS hit"
    )
    # The array parameter must come first in the text: unnest(%s) precedes the conditions' parameters.
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall())
