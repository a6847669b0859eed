import uuid

from pydantic import BaseModel, Field

from app.core.inbound import InboundModel


class Credentials(InboundModel):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[\w.@+-]+$")
    password: str = Field(min_length=8, max_length=256)


class LoginRequest(InboundModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenResponse(BaseModel):
    participant_id: uuid.UUID
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
