"""Password hashing and access tokens; the only module that imports python-jose."""

import uuid
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jose import JWTError, jwt

from app.core.config import Settings

_hasher = PasswordHasher()
# Verifying against this when a username is unknown keeps login time independent of
# whether the account exists.
_DUMMY_HASH = _hasher.hash("taskwire-timing-equaliser")


class InvalidToken(Exception):
    """The token is missing, malformed, badly signed, expired or names no participant."""


def hash_password(password: str) -> str:
    """An argon2id hash of the password (slow on purpose: call it off the event loop)."""
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether the password matches; takes the same time when there is no hash to check."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def create_access_token(participant_id: uuid.UUID, settings: Settings, *, expires_in: timedelta | None = None) -> str:
    """A signed JWT whose `sub` is the participant id."""
    now = datetime.now(UTC)
    expire = now + (expires_in if expires_in is not None else timedelta(minutes=settings.jwt_expire_minutes))
    claims = {"sub": str(participant_id), "iat": int(now.timestamp()), "exp": int(expire.timestamp())}
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)


def decode_access_token(token: str, settings: Settings) -> uuid.UUID:
    """The participant id a valid token was issued to; raises InvalidToken otherwise."""
    try:
        # The algorithm list is pinned so a token cannot choose `none` or another key type.
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            options={"require_exp": True, "require_sub": True},
        )
        return uuid.UUID(str(claims["sub"]))
    except (JWTError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidToken(str(exc)) from None
