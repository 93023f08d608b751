"""Runs, sub-streams, gaps and quarantine; segment ids never reused.

- ``segments.stream``: 0 for the camera's main stream, 1 for its sub-stream.
- ``segments.media_start``: decode time (video timescale ticks) of the segment's first sample on
  its run's continuous time line; 0 starts a run.
- ``segments.state`` 2: quarantined (the file does not match its checksum).
- The fragment index flags gain bit 1, "media lost after this fragment"; the sample count moves
  from bits 1–31 to bits 2–31, so existing blobs are rewritten.
- SQLite: AUTOINCREMENT, so the id of a deleted segment is never handed out again.

Revision ID: 0002
Revises: 0001
"""

import struct

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

_ENTRY = struct.Struct("<III")


def _upgrade_blob(blob: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(blob) - len(blob) % _ENTRY.size, _ENTRY.size):
        duration, size, flags = _ENTRY.unpack_from(blob, i)
        out += _ENTRY.pack(duration, size, (flags & 1) | ((flags >> 1) << 2))
    return bytes(out)


def _rewrite_indexes(to_new: bool) -> None:
    conn = op.get_bind()
    t = sa.table("segments", sa.column("id"), sa.column("frag_index", sa.LargeBinary))
    rows = conn.execute(sa.select(t.c.id, t.c.frag_index).where(t.c.frag_index.is_not(None)))
    for seg_id, blob in rows.fetchall():
        new = _upgrade_blob(bytes(blob)) if to_new else _downgrade_blob(bytes(blob))
        conn.execute(t.update().where(t.c.id == seg_id).values(frag_index=new))


def _downgrade_blob(blob: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(blob) - len(blob) % _ENTRY.size, _ENTRY.size):
        duration, size, flags = _ENTRY.unpack_from(blob, i)
        out += _ENTRY.pack(duration, size, (flags & 1) | ((flags >> 2) << 1))
    return bytes(out)


def upgrade() -> None:
    with op.batch_alter_table(
        "segments", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.add_column(sa.Column("stream", sa.SmallInteger, nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("media_start", sa.BigInteger, nullable=False, server_default="0")
        )
    op.create_index("segments_camera_stream_end", "segments", ["camera_id", "stream", "end_us"])
    _rewrite_indexes(to_new=True)


def downgrade() -> None:
    _rewrite_indexes(to_new=False)
    op.drop_index("segments_camera_stream_end", "segments")
    with op.batch_alter_table("segments", recreate="always") as batch:
        batch.drop_column("media_start")
        batch.drop_column("stream")
