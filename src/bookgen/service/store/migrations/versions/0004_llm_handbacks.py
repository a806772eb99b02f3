"""How often a book (in-process) or a section (worker tier) was handed back after the LLM
provider failed, so the cap per book holds across processes and restarts; and how many of a
book's sections were stored outside the length band, so its status says so.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (
    ("jobs", "llm_handbacks"),
    ("jobs", "sections_out_of_band"),
    ("section_tasks", "llm_handbacks"),
)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, name in COLUMNS:
        if name not in {column["name"] for column in inspector.get_columns(table)}:
            # The server default fills existing rows.
            op.add_column(table, sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("jobs", "section_tasks"):
        with op.batch_alter_table(table) as batch:
            for name in [n for t, n in COLUMNS if t == table]:
                batch.drop_column(name)
