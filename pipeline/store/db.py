"""Batch writes: one multi-row INSERT per table per batch, on PostgreSQL and SQLite alike.

Django's bulk_create builds a model instance per row; at ingest rates (tens of thousands of rows per
second) that dominates, so plain dict rows go straight to ``INSERT ... ON CONFLICT``, with the table
and column names taken from the models. Both backends support ``ON CONFLICT`` and ``RETURNING``.
Dict rows carry None for a missing value, never NaN (the adapters see to that); DataFrames may hold NaN.
"""
from operator import itemgetter

import pandas as pd
from django.db import connection, models
from django.utils import timezone

MAX_PARAMS = 30000


def now_param():
    return connection.ops.adapt_datetimefield_value(timezone.now())


def _columns(model, fields):
    return [model._meta.get_field(name).column for name in fields]


def _series_values(series: pd.Series) -> list:
    """A column as plain Python values, missing (NaN/NA/None) as None."""
    return series.astype(object).where(series.notna(), None).tolist()


def _columnar(model, rows, fields=None):
    """Rows (list of dicts, or a DataFrame) as {field: list of values}, model defaults filled in."""
    if isinstance(rows, pd.DataFrame):
        fields = list(fields or rows.columns)
        data = {name: _series_values(rows[name]) for name in fields}
        n = len(rows)
    else:
        fields = list(fields or rows[0])
        try:
            data = {name: list(map(itemgetter(name), rows)) for name in fields}
        except KeyError:  # rows with different keys: a missing key is a missing value
            data = {name: [row.get(name) for row in rows] for name in fields}
        n = len(rows)
    for name, default in _defaults(model, fields).items():
        data[name] = [default] * n
    return data, n


def _defaults(model, fields):
    """Model defaults of the columns a row leaves out (the database knows none of them)."""
    return {
        f.name: f.get_default()
        for f in model._meta.concrete_fields
        if f.name not in fields and f.has_default() and not callable(f.default)
    }


def _in_key_order(model, data, n, key=None):
    """Rows sorted by their conflict key (the given fields, else the primary key, else the first unique
    constraint). Two writers that lock the same rows then lock them in the same order, so concurrent
    batches (an ingest and a step on the same detections) wait for each other instead of deadlocking."""
    if key is None:
        if model._meta.pk.name in data:
            key = [model._meta.pk.name]
        else:
            unique = [c.fields for c in model._meta.constraints if getattr(c, "fields", None)]
            key = list(unique[0]) if unique and all(f in data for f in unique[0]) else []
    if not key or n < 2:
        return data
    columns = [data[name] for name in key]
    order = sorted(range(n), key=lambda i: tuple((c[i] is None, c[i] if c[i] is not None else 0) for c in columns))
    return {name: [values[i] for i in order] for name, values in data.items()}


def _execute(model, sql_head, sql_tail, data, n, returning):
    """Run the statement over all rows; returns the RETURNING values.

    PostgreSQL gets one array parameter per column (``SELECT * FROM unnest(...)``): the SQL text stays
    short and fixed, so the driver does not re-parse a statement of thousands of placeholders. SQLite
    gets multi-row VALUES in chunks below its parameter limit.
    """
    qn = connection.ops.quote_name
    fields = list(data)
    head = sql_head.format(columns=", ".join(qn(c) for c in _columns(model, fields)))
    suffix = f" RETURNING {qn(returning)}" if returning else ""
    returned = []
    if connection.vendor == "postgresql":
        import psycopg

        types = [model._meta.get_field(name).db_type(connection) for name in fields]
        arrays = ", ".join(f"%b::{t}[]" for t in types)
        connection.ensure_connection()
        # Server-side binding (Django's own cursors quote parameters client-side, slow for big arrays);
        # binary arrays cost the server less than text ones (measured).
        # Driver errors become Django's (AdminShutdown -> OperationalError) and mark the connection
        # unusable, so the task's retry reconnects instead of failing on a dead connection.
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(f"{head} SELECT * FROM unnest({arrays}) {sql_tail}{suffix}", list(data.values()))
            if returning:
                returned.extend(r[0] for r in cursor.fetchall())
        return returned
    rows = list(zip(*data.values()))
    size = max(1, MAX_PARAMS // max(1, len(fields)))
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, n, size):
            chunk = rows[start : start + size]
            params = [value for row in chunk for value in row]
            cursor.execute(f"{head} VALUES {', '.join([placeholder] * len(chunk))} {sql_tail}{suffix}", params)
            if returning:
                returned.extend(r[0] for r in cursor.fetchall())
    return returned


def insert_ignore(model: type[models.Model], rows, fields=None, returning=None):
    """Insert rows (dicts or a DataFrame), skipping those that clash with a unique key. Returns the
    inserted ``returning`` column values (the primary key by default): what was really new."""
    if len(rows) == 0:
        return []
    data, n = _columnar(model, rows, fields)
    data = _in_key_order(model, data, n)
    qn = connection.ops.quote_name
    head = f"INSERT INTO {qn(model._meta.db_table)} ({{columns}})"
    return _execute(model, head, "ON CONFLICT DO NOTHING", data, n, returning or model._meta.pk.column)


def upsert(model, rows, unique_fields, update_fields, newer_than=None, fields=None):
    """Insert or update (dicts or a DataFrame) on ``unique_fields``. With ``newer_than`` (a column), an
    existing row is only overwritten by a row whose value in that column is larger (newest alert wins)."""
    if len(rows) == 0:
        return 0
    data, n = _columnar(model, rows, fields)
    data = _in_key_order(model, data, n, unique_fields)
    qn = connection.ops.quote_name
    table = qn(model._meta.db_table)
    sets = ", ".join(f"{qn(c)} = excluded.{qn(c)}" for c in _columns(model, update_fields))
    tail = f"ON CONFLICT ({', '.join(qn(c) for c in _columns(model, unique_fields))}) DO UPDATE SET {sets}"
    if newer_than:
        column = qn(model._meta.get_field(newer_than).column)
        tail += f" WHERE {table}.{column} < excluded.{column}"
    _execute(model, f"INSERT INTO {table} ({{columns}})", tail, data, n, None)
    return n


def existing_values(model, field, values):
    """The subset of ``values`` already present in ``model.field`` (one query per few thousand values)."""
    values = list(values)
    found = set()
    for start in range(0, len(values), 5000):
        found.update(
            model.objects.filter(**{f"{field}__in": values[start : start + 5000]}).values_list(field, flat=True)
        )
    return found
