"""Batch writes: one multi-row INSERT per table per batch, on PostgreSQL and SQLite alike.

Django's bulk_create builds a model instance per row; at ingest rates (tens of thousands of rows per
second) that dominates, so plain dict rows go straight to ``INSERT ... ON CONFLICT``, with the table
and column names taken from the models. Both backends support ``ON CONFLICT`` and ``RETURNING``.
Rows carry None for a missing value, never NaN (the adapters and ``loaders.records`` see to that).
"""
from django.db import connection, models
from django.utils import timezone

MAX_PARAMS = 30000


def now_param():
    return connection.ops.adapt_datetimefield_value(timezone.now())


def _columns(model, fields):
    return [model._meta.get_field(name).column for name in fields]


def _chunks(rows, fields):
    size = max(1, MAX_PARAMS // max(1, len(fields)))
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _defaults(model, fields):
    """Model defaults of the columns a row leaves out (the database knows none of them)."""
    return {
        f.name: f.get_default()
        for f in model._meta.concrete_fields
        if f.name not in fields and f.has_default() and not callable(f.default)
    }


def _with_defaults(model, rows, fields):
    defaults = _defaults(model, fields)
    if not defaults:
        return rows, fields
    return [{**defaults, **row} for row in rows], fields + list(defaults)


def _execute(model, sql_head, sql_tail, rows, fields, returning):
    """Run the statement over all rows; returns the RETURNING values.

    PostgreSQL gets one array parameter per column (``SELECT * FROM unnest(...)``): the SQL text stays
    short and fixed, so the driver does not re-parse a statement of thousands of placeholders. SQLite
    gets multi-row VALUES in chunks below its parameter limit.
    """
    qn = connection.ops.quote_name
    suffix = f" RETURNING {qn(returning)}" if returning else ""
    returned = []
    if connection.vendor == "postgresql":
        import psycopg

        types = [model._meta.get_field(name).db_type(connection) for name in fields]
        arrays = ", ".join(f"%b::{t}[]" for t in types)
        columns = [[row.get(name) for row in rows] for name in fields]
        connection.ensure_connection()
        # Server-side binding (Django's own cursors quote parameters client-side, slow for big arrays).
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(f"{sql_head} SELECT * FROM unnest({arrays}) {sql_tail}{suffix}", columns)
            if returning:
                returned.extend(r[0] for r in cursor.fetchall())
        return returned
    with connection.cursor() as cursor:
        placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
        for chunk in _chunks(rows, fields):
            params = [row.get(name) for row in chunk for name in fields]
            cursor.execute(f"{sql_head} VALUES {', '.join([placeholder] * len(chunk))} {sql_tail}{suffix}", params)
            if returning:
                returned.extend(r[0] for r in cursor.fetchall())
    return returned


def insert_ignore(model: type[models.Model], rows: list[dict], fields=None, returning=None):
    """Insert rows, skipping those that clash with a unique key. Returns the inserted ``returning``
    column values (the primary key by default), so callers count what was really new."""
    if not rows:
        return []
    rows, fields = _with_defaults(model, rows, fields or list(rows[0]))
    qn = connection.ops.quote_name
    returning = returning or model._meta.pk.column
    head = f"INSERT INTO {qn(model._meta.db_table)} ({', '.join(qn(c) for c in _columns(model, fields))})"
    return _execute(model, head, "ON CONFLICT DO NOTHING", rows, fields, returning)


def upsert(model, rows, unique_fields, update_fields, newer_than=None, fields=None):
    """Insert or update on ``unique_fields``. With ``newer_than`` (a column), an existing row is only
    overwritten by a row whose value in that column is larger (the newest alert wins)."""
    if not rows:
        return 0
    rows, fields = _with_defaults(model, rows, fields or list(rows[0]))
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    head = f"INSERT INTO {table} ({', '.join(qn(c) for c in _columns(model, fields))})"
    sets = ", ".join(f"{qn(c)} = excluded.{qn(c)}" for c in _columns(model, update_fields))
    tail = f"ON CONFLICT ({', '.join(qn(c) for c in _columns(model, unique_fields))}) DO UPDATE SET {sets}"
    if newer_than:
        column = qn(model._meta.get_field(newer_than).column)
        tail += f" WHERE {table}.{column} < excluded.{column}"
    _execute(model, head, tail, rows, fields, None)
    return len(rows)


def existing_values(model, field, values):
    """The subset of ``values`` already present in ``model.field`` (one query per few thousand values)."""
    values = list(values)
    found = set()
    for start in range(0, len(values), 5000):
        found.update(
            model.objects.filter(**{f"{field}__in": values[start : start + 5000]}).values_list(field, flat=True)
        )
    return found
