"""Images, their regions and actions, sync runs, and the live_images view.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from inventory.tables import JSONType, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.Text()),
        sa.Column("type", sa.Text()),
        sa.Column("distribution", sa.Text()),
        sa.Column("slug", sa.Text()),
        sa.Column("public", sa.Boolean()),
        sa.Column("regions", JSONType),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("min_disk_size", sa.Integer()),
        sa.Column("size_gigabytes", sa.Float()),
        sa.Column("description", sa.Text()),
        sa.Column("tags", JSONType),
        sa.Column("status", sa.Text()),
        sa.Column("error_message", sa.Text()),
        sa.Column("raw", JSONType, nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("account", "id", name="pk_images"),
    )
    op.create_table(
        "image_regions",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("image_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("region_slug", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account", "image_id", "region_slug", name="pk_image_regions"
        ),
    )
    op.create_index(
        "ix_image_regions_account_region_slug",
        "image_regions",
        ["account", "region_slug"],
    )
    op.create_table(
        "image_actions",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", UTCDateTime()),
        sa.Column("region", JSONType),
        sa.Column("region_slug", sa.Text()),
        sa.Column("resource_id", sa.BigInteger()),
        sa.Column("resource_type", sa.Text()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("status", sa.Text()),
        sa.Column("type", sa.Text()),
        sa.Column("raw", JSONType, nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account", "id", name="pk_image_actions"),
    )
    op.create_index(
        "ix_image_actions_account_image_id", "image_actions", ["account", "image_id"]
    )
    op.create_table(
        "sync_runs",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("images_seen", sa.Integer(), nullable=False),
        sa.Column("images_added", sa.Integer(), nullable=False),
        sa.Column("images_updated", sa.Integer(), nullable=False),
        sa.Column("images_removed", sa.Integer(), nullable=False),
        sa.Column("actions_seen", sa.Integer(), nullable=False),
        sa.Column("actions_added", sa.Integer(), nullable=False),
        sa.Column("actions_updated", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("rate_limited", sa.Integer(), nullable=False),
        sa.Column("rate_wait_s", sa.Float(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.PrimaryKeyConstraint("account", "id", name="pk_sync_runs"),
    )
    op.create_index(
        "ix_sync_runs_account_started_at", "sync_runs", ["account", "started_at"]
    )
    op.execute(
        "CREATE VIEW live_images AS SELECT * FROM images WHERE deleted_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP VIEW live_images")
    op.drop_table("sync_runs")
    op.drop_table("image_actions")
    op.drop_table("image_regions")
    op.drop_table("images")
