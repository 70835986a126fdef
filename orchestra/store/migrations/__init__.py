"""Alembic migrations of the trace store, run programmatically by `orchestra.store.sql.SqlStore` on open."""
