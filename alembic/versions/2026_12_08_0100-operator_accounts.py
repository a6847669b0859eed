"""Operators are accounts (users.is_operator), made with `taskwire admin add`, not names anyone may register

Revision ID: 0006_operator_accounts
Revises: 0005_tasks_created_at_index
Create Date: 2026-12-08 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006_operator_accounts"
down_revision: str | None = "0005_tasks_created_at_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nobody is promoted here: an account named in ADMIN_USERNAMES may be a squatter's (issue 25).
    # The operator runs `taskwire admin add <name>` once (docs/operations.md).
    op.add_column("users", sa.Column("is_operator", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Every replica looks its operators up every few seconds while it has none.
    op.create_index("ix_users_is_operator", "users", ["is_operator"])


def downgrade() -> None:
    op.drop_index("ix_users_is_operator", table_name="users")
    op.drop_column("users", "is_operator")
