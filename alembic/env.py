"""Alembic environment: the schema comes only from these migrations, against Settings' DATABASE_URL."""

from typing import Any

from sqlalchemy import Connection

from alembic import context
from app.core.config import get_settings
from app.db.base import Base, UTCDateTime
from app.db.session import create_sync_engine, sync_database_url
from app.models import __all__ as _all_models  # noqa: F401  (registers every table)

target_metadata = Base.metadata


def _url() -> str:
    configured = context.config.attributes.get("database_url") or get_settings().database_url
    return str(configured)


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import the app: render the app's column types as plain SQLAlchemy ones.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection | None = None) -> None:
    is_sqlite = sync_database_url(_url()).get_backend_name() == "sqlite"
    options = {
        "target_metadata": target_metadata,
        "compare_type": True,
        "render_as_batch": is_sqlite,
        "render_item": _render_item,
    }
    if connection is None:
        context.configure(url=sync_database_url(_url()).render_as_string(hide_password=False), **options)
    else:
        context.configure(connection=connection, **options)


if context.is_offline_mode():
    _configure()
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_sync_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
