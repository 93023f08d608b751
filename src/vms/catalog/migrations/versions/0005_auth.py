"""Users, roles, grants, refresh tokens and API keys (``vms.auth``).

- ``users``: name (unique), argon2id hash, role, disabled, when created and when the password
  last changed, ``token_version`` (bumped to revoke every token of the user).
- ``roles``: seeded with the built-in ``admin``, ``operator`` and ``viewer``.
- ``grants``: a user's cameras (``*``: every camera), optionally narrowed to some actions.
- ``refresh_tokens``: SHA-256 of each refresh token, its family (one login's chain of
  rotations), expiry and whether it is revoked.
- ``api_keys``: SHA-256 of each key, its public prefix, owner, scopes, use and revocation.

No user is created: the first admin comes from ``vms user add`` or the setup token.

Revision ID: 0005
Revises: 0003
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

_BUILTIN = {
    "admin": ["view", "live", "playback", "export", "manage", "admin"],
    "operator": ["view", "live", "playback", "export"],
    "viewer": ["view", "live"],
}


def upgrade() -> None:
    roles = op.create_table(
        "roles",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("builtin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("permissions", sa.Text, nullable=False),
    )
    op.bulk_insert(
        roles,
        [{"name": n, "builtin": True, "permissions": json.dumps(a)} for n, a in _BUILTIN.items()],
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(64), sa.ForeignKey("roles.name"), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("password_changed_us", sa.BigInteger, nullable=False),
        sa.Column("token_version", sa.Integer, nullable=False, server_default="0"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "grants",
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("actions", sa.Text, nullable=True),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("refresh_tokens_family", "refresh_tokens", ["family"])
    op.create_index("refresh_tokens_user", "refresh_tokens", ["user_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("last_used_us", sa.BigInteger, nullable=True),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    for table in ("api_keys", "refresh_tokens", "grants", "users", "roles"):
        op.drop_table(table)
