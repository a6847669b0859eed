"""Tasks: execution attempt (fencing token), idempotency key and request hash

Revision ID: 0002_lease_idempotency
Revises: 0001_initial
Create Date: 2026-11-22 22:13:22.157066
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002_lease_idempotency"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_tasks_state_updated", ["state", "updated_at"], unique=False)
        batch_op.create_unique_constraint("uq_tasks_participant_idempotency_key", ["participant_id", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_constraint("uq_tasks_participant_idempotency_key", type_="unique")
        batch_op.drop_index("ix_tasks_state_updated")
        batch_op.drop_column("request_hash")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("attempt")
