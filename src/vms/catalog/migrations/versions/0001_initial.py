"""Initial schema: roots, cameras, segments (one row per segment), garbage.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "roots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("camera_id", sa.String(64), sa.ForeignKey("cameras.id"), nullable=False),
        sa.Column("root_id", sa.Integer, sa.ForeignKey("roots.id"), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=False),
        sa.Column("codec", sa.String(16), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("has_audio", sa.Boolean, nullable=False),
        sa.Column("timescale", sa.Integer, nullable=False),
        sa.Column("init_bytes", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("fragments", sa.Integer, nullable=False),
        sa.Column("frag_index", sa.LargeBinary, nullable=True),
        sa.Column("crc32", sa.BigInteger, nullable=True),
    )
    op.create_index("segments_camera_start", "segments", ["camera_id", "start_us"])
    op.create_index("segments_root_start", "segments", ["root_id", "start_us"])
    op.create_index("segments_state", "segments", ["state"])
    op.create_table(
        "garbage",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("root_id", sa.Integer, sa.ForeignKey("roots.id"), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("garbage")
    op.drop_index("segments_state", "segments")
    op.drop_index("segments_root_start", "segments")
    op.drop_index("segments_camera_start", "segments")
    op.drop_table("segments")
    op.drop_table("cameras")
    op.drop_table("roots")
