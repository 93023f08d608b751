"""Saved views of the web client's Live wall (``vms.auth.views``).

- ``views``: one row per (user, name): the layout (``1``, ``4``, ``9`` or ``16`` tiles) and the
  JSON list of the tiles' cameras (an id or null). Rows go with their user.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "views",
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("layout", sa.String(4), nullable=False),
        sa.Column("cameras", sa.Text, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("views")
