"""Alembic's migrations of the gateway's database (SQLite and PostgreSQL): `env.py` and `versions/`.

Run through `manifold.store.schema` (at start-up and by `manifold db upgrade`), never with an alembic.ini:
the connection comes from the gateway's own `database_url`.
"""
