"""The catalog: the relational index of cameras, storage roots and segments (SQLite by default,
PostgreSQL for several nodes), created and upgraded only by its Alembic migrations."""
