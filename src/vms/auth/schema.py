"""The tables of users, roles, grants, refresh tokens and API keys (migration 0005).

Defined beside the catalog's own tables (same ``MetaData``), kept here so the catalog module
knows nothing of users. What each column holds, and why no table holds a usable secret:
docs/design/security.md, "What is stored".
"""

from __future__ import annotations

import sqlalchemy as sa

from vms.catalog.store import metadata

NAME_MAX = 64

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(NAME_MAX), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(NAME_MAX), sa.ForeignKey("roles.name"), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("password_changed_us", sa.BigInteger, nullable=False),
    # Every access and media token carries it as ``ver``; bumping it kills them all at once.
    sa.Column("token_version", sa.Integer, nullable=False, server_default="0"),
    sqlite_autoincrement=True,
)

roles = sa.Table(
    "roles",
    metadata,
    sa.Column("name", sa.String(NAME_MAX), primary_key=True),
    sa.Column("builtin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("permissions", sa.Text, nullable=False),  # JSON list of actions
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("camera_id", sa.String(64), primary_key=True),  # a camera id, or '*'
    sa.Column("actions", sa.Text, nullable=True),  # JSON list; NULL: whatever the role allows
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),  # SHA-256 hex of the token
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("family", sa.String(32), nullable=False),
    sa.Column("expires_us", sa.BigInteger, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("refresh_tokens_family", "family"),
    sa.Index("refresh_tokens_user", "user_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(NAME_MAX), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("hash", sa.String(64), nullable=False),  # SHA-256 hex of the whole key
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("scopes", sa.Text, nullable=False),  # JSON {"actions": [...], "cameras": [...]}
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("last_used_us", sa.BigInteger, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    sqlite_autoincrement=True,
)
