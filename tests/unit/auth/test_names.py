"""Usernames: one spelling per name, no disguise of another, operators' names reserved."""

import pytest

from app.auth.names import check_username, skeleton
from app.auth.service import reserved_usernames
from app.core.config import Settings


@pytest.mark.parametrize(
    "disguise",
    [
        "opsadm\u0131n",  # dotless i (issue 25)
        "ops\u0251dmin",  # Latin alpha
        "op\ua731admin",  # small capital s
        "\u0430\u0435\u043e\u0440",  # all Cyrillic, all Latin-looking
        "\u1d00dmin",  # small capital a
    ],
)
def test_a_name_that_reads_as_a_plain_one_with_look_alike_letters_is_refused(disguise: str) -> None:
    with pytest.raises(ValueError, match="look-alike"):
        check_username(disguise)


@pytest.mark.parametrize(
    "name", ["ada_lovelace", "jos\u00e9", "\u03b1\u03bb\u03ad\u03be\u03b7\u03c2", "\u5f20\u4f1f\u660e"]
)
def test_names_in_their_own_letters_are_welcome(name: str) -> None:
    assert check_username(name)


def test_reserved_names_cover_every_spelling_and_disguise() -> None:
    reserved = reserved_usernames(Settings(admin_usernames=" OpsAdmin, ,ＢＯＢ "))
    assert reserved == {"opsadmin", "bob"}
    for attempt in ("opsadmin", "OPSADMIN", "opsadm\u0131n", "\uff4f\uff50\uff53\uff41\uff44\uff4d\uff49\uff4e"):
        assert skeleton(attempt) in reserved, attempt
    assert reserved_usernames(Settings()) == frozenset()
