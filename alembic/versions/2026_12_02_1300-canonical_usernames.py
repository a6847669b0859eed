"""Usernames in their canonical form (NFKC, case-folded): one account per name however it is typed

Revision ID: 0004_canonical_usernames
Revises: 0003_submissions
Create Date: 2026-12-02 13:00:00
"""

import logging
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004_canonical_usernames"
down_revision: str | None = "0003_submissions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")


def _canonical(name: str) -> str:
    # As app.auth.names.canonical_username, frozen here: a migration must not change with the app.
    return unicodedata.normalize("NFKC", name).casefold().strip()


def upgrade() -> None:
    users = sa.table("users", sa.column("participant_id", sa.Uuid()), sa.column("username", sa.String()))
    connection = op.get_bind()
    rows = connection.execute(sa.select(users.c.participant_id, users.c.username)).all()
    taken = {username for _, username in rows}
    for participant_id, username in rows:
        canonical = _canonical(username)
        if canonical == username:
            continue
        if canonical in taken:
            # Two accounts whose names differ only in case: this one keeps its spelling, and
            # signs in by it exactly (app/auth/service.py).
            logger.warning("username %r kept as it is: %r is another account", username, canonical)
            continue
        connection.execute(users.update().where(users.c.participant_id == participant_id).values(username=canonical))
        taken.discard(username)
        taken.add(canonical)


def downgrade() -> None:
    pass  # the original spellings are not kept; canonical names remain valid logins
