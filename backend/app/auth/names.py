"""What a username and a password may be: one spelling per name, and no password anyone would guess.

A username is stored in one canonical form (NFKC, case-folded), so `Alice`, `alice` and
`ａｌｉｃｅ` (full width) are one account. Letters must come from one script (Han with Kana,
as Japanese is written, counts as one), and a name that reads as a plain ASCII one but is
written with look-alike letters is refused: `аdmin` with a Cyrillic `а`, `opsadmın` with a
dotless `ı`, `opꜱadmin` with a small capital `ꜱ` cannot pass for the names they imitate.
`skeleton` is the plain spelling such a name imitates (after Unicode's confusables, UTS #39).
"""

import re
import unicodedata
from functools import lru_cache
from pathlib import Path

USERNAME_PATTERN = re.compile(r"^[\w.@+-]+$")
_COMMON_PASSWORDS = Path(__file__).with_name("common_passwords.txt")
# Scripts that may share one username (Japanese mixes Han, Hiragana and Katakana).
_COMPATIBLE = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "HANGUL"}
# Letters drawn like plain Latin ones, and the letter each imitates: Cyrillic, Greek, and the
# Latin script's own (dotless i, IPA letters, small capitals). Accented letters are not here:
# `josé` is another name than `jose`, not a disguise of it.
_LOOKALIKE_OF = {
    **dict(zip("аеорсухіјѕԁһӏԛԝԍ", "aeopcyxijsdhlqwg", strict=True)),
    **dict(zip("αοκνρτυχιβεζη", "aokvptuxibezn", strict=True)),
    **dict(zip("ıɩɪȷǀɑɒᴀʙᴄᴅᴇɡɢʜᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "iiijlaaabcdegghjklmnoprstuvwyz", strict=True)),
}


def canonical_username(raw: str) -> str:
    """The stored form of a username: NFKC-normalised, case-folded, trimmed."""
    return unicodedata.normalize("NFKC", raw).casefold().strip()


def check_username(raw: str) -> str:
    """The canonical username; raises ValueError saying why a name cannot be registered."""
    name = canonical_username(raw)
    if not 3 <= len(name) <= 64:
        raise ValueError("a username has 3 to 64 characters")
    if not USERNAME_PATTERN.match(name):
        raise ValueError("a username has letters, digits and . @ + - _ only")
    scripts = {_script(ch) for ch in name if ch.isalpha()}
    if len(scripts) > 1:
        raise ValueError("a username's letters come from one alphabet")
    if not name.isascii() and skeleton(name).isascii():
        raise ValueError("this username reads like a plain one written with look-alike letters")
    return name


def skeleton(name: str) -> str:
    """The plain spelling a name's look-alike letters imitate (the name itself when it has none)."""
    return "".join(_LOOKALIKE_OF.get(ch, ch) for ch in canonical_username(name))


def check_password(password: str, username: str) -> None:
    """Raise ValueError for a password anyone could guess: a common one, or the username itself."""
    folded = password.casefold()
    if canonical_username(username) in folded or folded in canonical_username(username):
        raise ValueError("the password must not contain the username")
    if folded in common_passwords():
        raise ValueError("this password is one of the most common ones; choose another")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The refused passwords (lower case), read once."""
    lines = _COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().casefold() for line in lines if line.strip() and not line.startswith("#"))


def _script(ch: str) -> str:
    try:
        first = unicodedata.name(ch).split()[0]
    except ValueError:
        return "UNKNOWN"
    return _COMPATIBLE.get(first, first)
