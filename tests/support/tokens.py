"""Access tokens a client should never get through with: expired, unsigned (`alg=none`), tampered."""

import base64
import json
import uuid
from datetime import timedelta

from app.core.config import Settings
from app.core.security import create_access_token


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def expired_token(participant_id: str, jwt_secret: str) -> str:
    """Rightly signed, but expired a minute ago."""
    settings = Settings(jwt_secret=jwt_secret)
    return create_access_token(uuid.UUID(participant_id), settings, expires_in=timedelta(minutes=-1))


def unsigned_token(participant_id: str) -> str:
    """`alg: none` and no signature, naming any participant."""

    def part(obj: dict[str, object]) -> str:
        return _b64(json.dumps(obj).encode())

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': participant_id, 'exp': 4102444800})}."


def tampered_token(token: str, participant_id: str) -> str:
    """A valid token whose payload now names `participant_id`, under the original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = participant_id
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
