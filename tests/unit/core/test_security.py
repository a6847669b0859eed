import uuid
from datetime import timedelta

import pytest
from jose import jwt

from app.core.config import Settings
from app.core.security import InvalidToken, create_access_token, decode_access_token, hash_password, verify_password

SETTINGS = Settings(jwt_secret="unit-test-secret")


def test_token_round_trip() -> None:
    participant = uuid.uuid4()
    assert decode_access_token(create_access_token(participant, SETTINGS), SETTINGS) == participant


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        create_access_token(uuid.uuid4(), SETTINGS, expires_in=timedelta(seconds=-5)),
        create_access_token(uuid.uuid4(), Settings(jwt_secret="another-secret")),
        jwt.encode({"sub": "not-a-uuid", "exp": 4102444800}, "unit-test-secret", algorithm="HS256"),
        jwt.encode({"sub": str(uuid.uuid4())}, "unit-test-secret", algorithm="HS256"),  # no exp
        jwt.encode({"sub": str(uuid.uuid4()), "exp": 4102444800}, "unit-test-secret", algorithm="HS512"),
    ],
    ids=["empty", "garbage", "expired", "wrong-secret", "bad-sub", "no-exp", "other-alg"],
)
def test_invalid_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidToken):
        decode_access_token(token, SETTINGS)


def test_passwords_hash_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed != "correct horse"
    assert verify_password("correct horse", hashed)
    assert not verify_password("wrong horse", hashed)
    assert not verify_password("correct horse", None)
    assert not verify_password("correct horse", "not-a-hash")
