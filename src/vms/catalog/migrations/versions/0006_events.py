"""Events and motion (``vms.events.store``, docs/design/detection.md).

- ``events``: one row per event. The columns a query filters or sorts on (camera, label, start,
  end, top score) beside ``data``, the whole event as JSON (what the API and the sinks send);
  ``zones`` is the JSON list of the zones it entered, for reading; ``updated_us`` is the time of
  the latest frame the row describes (its end once ended).
- ``event_zones``: one row per (event, zone entered), with the event's start: the zone filter.
  A JSON text column cannot be indexed on both SQLite and PostgreSQL, and ``zones LIKE
  '%"door"%'`` is case-insensitive on SQLite but not on PostgreSQL (and ``_``, allowed in zone
  names, is a LIKE wildcard): an equality on this table is exact on both and served by
  ``(zone, start_us)``.
- ``motion``: one row per camera per minute, 60 bytes: the highest motion score (0–255) of each
  second. ``minute_us`` alone is indexed for expiry, which runs across cameras.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("camera_id", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("start_us", sa.BigInteger, nullable=False),
        sa.Column("end_us", sa.BigInteger, nullable=True),
        sa.Column("top_score", sa.Float, nullable=False),
        sa.Column("zones", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_index("events_camera_start", "events", ["camera_id", "start_us"])
    op.create_index("events_camera_end", "events", ["camera_id", "end_us"])
    op.create_index("events_start", "events", ["start_us"])
    op.create_index("events_label_start", "events", ["label", "start_us"])
    op.create_table(
        "event_zones",
        sa.Column(
            "event_id",
            sa.String(36),
            sa.ForeignKey("events.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("zone", sa.String(64), primary_key=True),
        sa.Column("start_us", sa.BigInteger, nullable=False),
    )
    op.create_index("event_zones_zone_start", "event_zones", ["zone", "start_us"])
    op.create_table(
        "motion",
        sa.Column("camera_id", sa.String(64), primary_key=True),
        sa.Column("minute_us", sa.BigInteger, primary_key=True),
        sa.Column("scores", sa.LargeBinary(60), nullable=False),
    )
    op.create_index("motion_minute", "motion", ["minute_us"])


def downgrade() -> None:
    for table in ("motion", "event_zones", "events"):
        op.drop_table(table)
