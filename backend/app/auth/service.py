"""Registration and login."""

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import repository
from app.auth.hashing import PasswordHashing
from app.auth.names import skeleton
from app.auth.schemas import Credentials, LoginRequest, TokenResponse
from app.core.config import Settings
from app.core.errors import Conflict, InvalidCredentials
from app.core.security import create_access_token


async def register(
    session: AsyncSession, credentials: Credentials, settings: Settings, hashing: PasswordHashing
) -> TokenResponse:
    """Create an account and sign it in; 409 when the username (in its canonical form) is taken or reserved."""
    if skeleton(credentials.username) in reserved_usernames(settings):
        # An operator's name (ADMIN_USERNAMES) is made only by `taskwire admin add`; to anyone
        # else it is simply taken.
        raise Conflict("that username is taken", code="username_taken")
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


def reserved_usernames(settings: Settings) -> frozenset[str]:
    """ADMIN_USERNAMES as plain spellings (`skeleton`): names nobody registers over HTTP."""
    return frozenset(skeleton(name) for name in settings.admin_usernames.split(",") if name.strip())


async def login(
    session: AsyncSession, request: LoginRequest, settings: Settings, hashing: PasswordHashing
) -> TokenResponse:
    """Sign in; the same 401 for an unknown user and a wrong password."""
    names = [request.canonical_username]
    if request.username != request.canonical_username:
        # An account older than canonical names whose spelling migration 0004 had to keep
        # (another account already had the folded name) signs in by its exact spelling.
        names.append(request.username)
    checked = False
    for name in names:
        user = await session.run_sync(repository.get_by_username, name)
        if user is None:
            continue
        checked = True
        if await hashing.verify(request.password, user.password_hash):
            return TokenResponse(
                participant_id=user.participant_id, access_token=create_access_token(user.participant_id, settings)
            )
    if not checked:
        await hashing.verify(request.password, None)  # as long as a wrong password takes
    raise InvalidCredentials("wrong username or password")
