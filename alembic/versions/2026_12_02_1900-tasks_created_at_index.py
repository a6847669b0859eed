"""An index on tasks.created_at: the ops overview counts the last hour's tasks without a table scan

Revision ID: 0005_tasks_created_at_index
Revises: 0004_canonical_usernames
Create Date: 2026-12-02 19:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_tasks_created_at_index"
down_revision: str | None = "0004_canonical_usernames"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_created_at", "tasks", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_created_at", table_name="tasks")
