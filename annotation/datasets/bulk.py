"""Plain inserts of many rows, for imports.

``QuerySet.bulk_create`` prepares every field of every object through the field API; for
an import that was most of the time (profile of 20,000 preference records: 23 s of 37 s in
``bulk_create``'s SQL preparation). Here the rows go in as tuples: each field's conversion
to the database's form is chosen once per field (JSON as text through orjson, UUIDs and
datetimes as the backend stores them), fields a row leaves out take their model default,
and one ``executemany`` (PostgreSQL: ``execute_values``, one statement per page) inserts a
chunk. Nothing here knows our models; ``auto_now_add`` fields get the time of the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import orjson
from django.db import connection, models
from django.utils import timezone

PAGE_ROWS = 1000


def _converter(field: models.Field) -> Callable:
    if isinstance(field, models.JSONField):
        return lambda value: orjson.dumps(value).decode()
    if isinstance(field, models.UUIDField):
        native = connection.features.has_native_uuid_field
        return (lambda value: str(value)) if native else (lambda value: value.hex)
    if isinstance(field, models.DateTimeField):
        return connection.ops.adapt_datetimefield_value
    return lambda value: value


def _columns(model) -> list[models.Field]:
    return [
        field
        for field in model._meta.concrete_fields
        if not (field.primary_key and isinstance(field, models.AutoField))
    ]


def _row_values(row: dict, converters, converted_defaults: dict) -> tuple:
    return tuple(
        (None if (value := row[name]) is None else convert(value))
        if name in row
        else converted_defaults[name]
        for name, convert in converters
    )


def _values(model, fields, rows: Iterable[dict]) -> list[tuple]:
    now = timezone.now()
    defaults = {}
    for field in fields:
        if getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
            defaults[field.attname] = now
        else:  # the default, or "" for text that is not nullable, or None
            defaults[field.attname] = field.get_default()
    converters = [(field.attname, _converter(field)) for field in fields]
    converted_defaults = {
        name: None if defaults[name] is None else convert(defaults[name])
        for name, convert in converters
    }
    return [_row_values(row, converters, converted_defaults) for row in rows]


def insert_rows(model, rows: Iterable[dict]) -> list[int]:
    """Insert ``rows`` (field name -> Python value; left out: the field's default) and
    return their new ids, in the rows' order (both backends number a multi-row INSERT's
    RETURNING rows in VALUES order, as Django's own bulk_create relies on)."""
    fields = _columns(model)
    values = _values(model, fields, rows)
    if not values:
        return []
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    pk = quote(model._meta.pk.column)
    ids: list[int] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg2.extras import execute_values

            # Names from the model's own meta, quoted; values go as parameters.
            sql = f"INSERT INTO {table} ({columns}) VALUES %s RETURNING {pk}"  # noqa: S608
            for start in range(0, len(values), PAGE_ROWS):
                page = values[start : start + PAGE_ROWS]
                rows_back = execute_values(
                    cursor.cursor, sql, page, page_size=len(page), fetch=True
                )
                ids.extend(row[0] for row in rows_back)
        else:
            per_statement = max(1, (connection.features.max_query_params or 999) // len(fields))
            one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
            for start in range(0, len(values), per_statement):
                page = values[start : start + per_statement]
                marks = ", ".join([one_row] * len(page))
                sql = f"INSERT INTO {table} ({columns}) VALUES {marks} RETURNING {pk}"  # noqa: S608
                cursor.execute(sql, [value for row in page for value in row])
                ids.extend(row[0] for row in cursor.fetchall())
    return ids
