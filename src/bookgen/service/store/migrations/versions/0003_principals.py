"""Principals: the owner of each job and the API keys (hashed) that authenticate them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A database made by create_all before Alembic owned the schema may hold these already.
    inspector = sa.inspect(op.get_bind())
    if "owner" not in {column["name"] for column in inspector.get_columns("jobs")}:
        op.add_column("jobs", sa.Column("owner", sa.String(80), nullable=True))
    if "ix_jobs_owner_status" not in {index["name"] for index in inspector.get_indexes("jobs")}:
        # Serves the per-principal list and the admission counts (active books per owner).
        op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("revoked_at", UTC_DATETIME, nullable=True),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_name", "api_keys", ["name"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_name", table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_jobs_owner_status", table_name="jobs")
    # batch mode: SQLite drops a column by copying the table.
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("owner")
