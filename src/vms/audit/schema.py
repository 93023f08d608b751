"""The ``audit_log`` table (migration 0004), one row per recorded act.

It shares the catalog's :data:`vms.catalog.store.metadata` so that one ``MetaData`` describes
the whole catalog; the table is created and changed only by migrations.
"""

from __future__ import annotations

import sqlalchemy as sa

from vms.catalog.store import metadata

HASH_CHARS = 64  # lowercase hex SHA-256
ACTOR_CHARS = 200
IP_CHARS = 64
ACTION_CHARS = 64
TARGET_CHARS = 255

audit_log = sa.Table(
    "audit_log",
    metadata,
    # Assigned by the writer as last + 1, never by a sequence (see AuditLog.append).
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(ACTOR_CHARS), nullable=False),
    sa.Column("actor_ip", sa.String(IP_CHARS), nullable=True),
    sa.Column("action", sa.String(ACTION_CHARS), nullable=False),
    sa.Column("target", sa.String(TARGET_CHARS), nullable=False),
    # The canonical JSON text that was hashed, byte for byte (not a JSON column: jsonb
    # reorders keys).
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(HASH_CHARS), nullable=False),
    sa.Column("hash", sa.String(HASH_CHARS), nullable=False),
    sa.Index("audit_log_at", "at_us"),
    sa.Index("audit_log_actor_at", "actor", "at_us"),
    sa.Index("audit_log_target_at", "target", "at_us"),
    sqlite_autoincrement=True,
)
