"""Exercise files (what authors write) and the public views of them (what learners see)."""

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operator = Literal[
    "exists",
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "greater_than",
    "less_than",
    "regex",
    "same_origin",
]


def url_origin(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute http(s) URL, as a browser writes an origin; None otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port not in (None, default) else "")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CodeFiles(_Strict):
    """A page's three editors."""

    html: str = ""
    css: str = ""
    js: str = ""


class _Assertion(_Strict):
    operator: Operator = "exists"
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> "_Assertion":
        if self.operator != "exists" and self.value is None:
            raise ValueError(f"operator {self.operator!r} needs a value")
        if self.operator == "regex":
            re.compile(str(self.value))
        if self.operator == "same_origin" and getattr(self, "type", None) != "assert_attribute":
            raise ValueError("same_origin compares a URL attribute (href, src): use it in assert_attribute")
        if self.operator == "same_origin" and url_origin(str(self.value)) is None:
            raise ValueError(f"same_origin needs an absolute http(s) URL, not {self.value!r}")
        return self


class AssertElement(_Assertion):
    """The number of elements matching `selector` (`exists`: at least one)."""

    type: Literal["assert_element"]
    selector: str


class AssertTextContent(_Assertion):
    """The whitespace-collapsed text of the first element matching `selector`."""

    type: Literal["assert_text_content"]
    selector: str


class AssertAttribute(_Assertion):
    """An attribute of the first element matching `selector` (`exists`: the attribute is present;
    `same_origin`: the URL it holds, resolved as the browser does, is on the origin of `value`)."""

    type: Literal["assert_attribute"]
    selector: str
    attribute: str


class AssertStyle(_Assertion):
    """A computed style property; expected values are normalised by the browser (`red` = `#f00`)."""

    type: Literal["assert_style"]
    selector: str
    property: str


class CustomScript(_Assertion):
    """The value returned by `script` (a function body), run where learner code cannot reach it."""

    type: Literal["custom_script"]
    script: str
    operator: Operator = "equals"
    value: Any = True


Assertion = Annotated[
    AssertElement | AssertTextContent | AssertAttribute | AssertStyle | CustomScript, Field(discriminator="type")
]


class Action(_Strict):
    """One user action in the learner's page."""

    # `type_text` types after what the field holds; `fill` replaces it (select all, then type).
    action: Literal["click", "type_text", "fill", "hover", "focus"]
    selector: str
    text: str | None = None

    @model_validator(mode="after")
    def _text_for_typing(self) -> "Action":
        if self.action in ("type_text", "fill") and self.text is None:
            raise ValueError(f"{self.action} needs text")
        return self


class InteractionAndAssert(_Strict):
    """Perform `actions`, then check `then`."""

    type: Literal["interaction_and_assert"]
    actions: list[Action] = Field(min_length=1, max_length=10)
    then: Assertion


class _Named(_Strict):
    name: str = Field(min_length=1, max_length=120)
    feedback: str = Field(min_length=1, max_length=500)


class ElementCheckpoint(AssertElement, _Named): ...


class TextCheckpoint(AssertTextContent, _Named): ...


class AttributeCheckpoint(AssertAttribute, _Named): ...


class StyleCheckpoint(AssertStyle, _Named): ...


class ScriptCheckpoint(CustomScript, _Named): ...


class InteractionCheckpoint(InteractionAndAssert, _Named): ...


Checkpoint = Annotated[
    ElementCheckpoint
    | TextCheckpoint
    | AttributeCheckpoint
    | StyleCheckpoint
    | ScriptCheckpoint
    | InteractionCheckpoint,
    Field(discriminator="type"),
]


class Exercise(_Strict):
    """One exercise file: what the learner sees, how it is graded, and a reference answer."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    title: str = Field(min_length=1, max_length=200)
    topic: Literal["html", "css", "javascript"]
    description_md: str = Field(min_length=1)
    start_code: CodeFiles
    checkpoints: list[Checkpoint] = Field(min_length=1, max_length=50)
    answer: CodeFiles


class ExerciseSummary(BaseModel):
    """An exercise in a list."""

    id: str
    title: str
    topic: str
    checkpoint_count: int


class ExerciseDetail(BaseModel):
    """What a learner may see of an exercise: never the checks' internals or the answer."""

    id: str
    title: str
    topic: str
    description_md: str
    start_code: CodeFiles
    checkpoints: list[str]
