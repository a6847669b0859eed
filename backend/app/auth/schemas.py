"""Bodies of the auth endpoints: usernames arrive in any spelling and leave in their canonical one."""

import uuid

from pydantic import BaseModel, Field, field_validator, model_validator

from app.auth.names import canonical_username, check_password, check_username
from app.core.inbound import InboundModel


class Credentials(InboundModel):
    """`POST /api/auth/register`: a new username (stored case-folded) and a password no one would guess."""

    username: str = Field(min_length=3, max_length=64, pattern=r"^[\w.@+-]+$")
    password: str = Field(min_length=8, max_length=256)

    @field_validator("username")
    @classmethod
    def _one_spelling(cls, username: str) -> str:
        return check_username(username)

    @model_validator(mode="after")
    def _not_guessable(self) -> "Credentials":
        check_password(self.password, self.username)
        return self


class LoginRequest(InboundModel):
    """`POST /api/auth/login`: the username in any case or width it was registered with."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)

    @property
    def canonical_username(self) -> str:
        """The username in its stored form."""
        return canonical_username(self.username)


class TokenResponse(BaseModel):
    participant_id: uuid.UUID
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
