"""Reading and writing the database in batches: one multi-row write per table, loads into DataFrames,
the SQLite writer lock."""
