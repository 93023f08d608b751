"""The catalog holds the cameras: their configuration, encrypted password and provenance.

- ``cameras.config``: the camera's configuration as JSON, never its password; NULL for a row
  that only names a camera (a 0002 row, or one made by ``Catalog.ensure_camera``) until the
  configuration file seeds it.
- ``cameras.secret``: the password, encrypted (``vms.cameras.secrets``); NULL when none.
- ``cameras.origin``: ``file`` (seeded from the configuration file) or ``api``.
- ``cameras.seed``: digest of the file entry the row was last seeded from; NULL when none.
- ``cameras.enabled``; ``cameras.removed_us``: when the camera was removed (its row stays while
  segments name it); ``cameras.updated_us``.

Existing rows become file cameras never seeded (``seed`` NULL): the next seed overwrites them
with their file entry, or marks them removed when the file no longer has them.

Plain ``ADD COLUMN``, no batch copy: ``cameras`` is the parent of ``segments.camera_id``, and
SQLite's table copy drops the parent, which the enforced foreign key refuses.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

_COLUMNS = ("config", "secret", "origin", "seed", "enabled", "removed_us", "updated_us")


def upgrade() -> None:
    op.add_column("cameras", sa.Column("config", sa.Text, nullable=True))
    op.add_column("cameras", sa.Column("secret", sa.LargeBinary, nullable=True))
    op.add_column(
        "cameras", sa.Column("origin", sa.String(8), nullable=False, server_default="file")
    )
    op.add_column("cameras", sa.Column("seed", sa.String(64), nullable=True))
    op.add_column(
        "cameras", sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true())
    )
    op.add_column("cameras", sa.Column("removed_us", sa.BigInteger, nullable=True))
    op.add_column(
        "cameras", sa.Column("updated_us", sa.BigInteger, nullable=False, server_default="0")
    )


def downgrade() -> None:
    # SQLite (3.35 and later) drops a column in place; no table copy (see above).
    for name in reversed(_COLUMNS):
        op.execute(sa.text(f"ALTER TABLE cameras DROP COLUMN {name}"))
