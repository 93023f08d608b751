"""The audit trail: ``audit_log``, one row per recorded act, hash-chained (docs/design/audit.md).

``seq`` is assigned by the writer (last + 1), so the column has no sequence on PostgreSQL;
on SQLite it is ``INTEGER PRIMARY KEY AUTOINCREMENT`` like ``segments``, so a rowid is never
handed out twice. ``details`` is the canonical JSON text that was hashed.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("actor_ip", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("audit_log_at", "audit_log", ["at_us"])
    op.create_index("audit_log_actor_at", "audit_log", ["actor", "at_us"])
    op.create_index("audit_log_target_at", "audit_log", ["target", "at_us"])


def downgrade() -> None:
    op.drop_table("audit_log")
