"""Registration and login."""

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository
from app.auth.hashing import PasswordHashing
from app.auth.schemas import Credentials, LoginRequest, TokenResponse
from app.core.config import Settings
from app.core.errors import Conflict, InvalidCredentials
from app.core.security import create_access_token


async def register(
    session: AsyncSession, credentials: Credentials, settings: Settings, hashing: PasswordHashing
) -> TokenResponse:
    """Create an account and sign it in; 409 when the username (in its canonical form) is taken."""
    password_hash = await hashing.hash(credentials.password)
    try:
        user = await session.run_sync(repository.add_user, credentials.username, password_hash)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("that username is taken", code="username_taken") from None
    return TokenResponse(
        participant_id=user.participant_id, access_token=create_access_token(user.participant_id, settings)
    )


async def login(
    session: AsyncSession, request: LoginRequest, settings: Settings, hashing: PasswordHashing
) -> TokenResponse:
    """Sign in; the same 401 for an unknown user and a wrong password."""
    user = await session.run_sync(repository.get_by_username, request.username)
    ok = await hashing.verify(request.password, user.password_hash if user else None)
    if user is None or not ok:
        raise InvalidCredentials("wrong username or password")
    return TokenResponse(
        participant_id=user.participant_id, access_token=create_access_token(user.participant_id, settings)
    )
