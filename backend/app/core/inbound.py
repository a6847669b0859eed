"""What every request body may hold: plain text and bounded nesting, refused at the edge (422).

A NUL character cannot be stored in a PostgreSQL text column, and JSON nested hundreds deep
costs recursion everywhere it goes (validation, the prompt, the JSON column): both are refused
here, once for every inbound model, instead of failing deep inside with a 500.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

MAX_INPUT_DEPTH = 32
# The largest id a 64-bit database integer holds: integer query parameters stop here.
MAX_ID = 2**63 - 1


def check_plain(value: Any, depth: int = 0) -> None:
    """Raise ValueError for a NUL character in any string or key, or nesting past MAX_INPUT_DEPTH."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text may not contain NUL (\\u0000) characters")
        return
    if depth >= MAX_INPUT_DEPTH and isinstance(value, dict | list):
        raise ValueError(f"nested deeper than {MAX_INPUT_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain(key, depth + 1)
            check_plain(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_plain(item, depth + 1)


class InboundPart(BaseModel):
    """A part of a request body: unknown fields are refused (its body checked the rest, once)."""

    model_config = ConfigDict(extra="forbid")


class InboundModel(InboundPart):
    """A request body: unknown fields, NUL characters and deep nesting are refused."""

    # The whole body is walked here, parts included: a part validating its own subtree again
    # would scan each submitted editor (up to 200,000 characters) twice.
    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data: Any) -> Any:
        check_plain(data)
        return data
