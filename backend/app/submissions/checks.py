"""Checkpoint logic that needs no browser (operators), and the scripts that read values in the browser."""

import re
from typing import Any

from app.exercises.schemas import (
    AssertAttribute,
    AssertElement,
    AssertStyle,
    AssertTextContent,
    CustomScript,
    url_origin,
)

_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")

# Runs in an isolated world of the learner's page: same DOM, but its own JavaScript globals,
# so learner code that replaces document.querySelector, getComputedStyle or Object.prototype
# cannot change what it sees. A style is read with what its expected value needs to be put in
# the same computed form (the element's font size for `em`, its parent's box for percentages):
# that is done by NORMALISE_JS in a page of the grader's own, which the learner's CSS cannot reach.
READER_JS = r"""
(spec) => {
  const first = () => document.querySelector(spec.selector);
  switch (spec.kind) {
    case 'count':
      return document.querySelectorAll(spec.selector).length;
    case 'text': {
      const el = first();
      return el ? el.textContent.replace(/\s+/g, ' ').trim() : null;
    }
    case 'attribute': {
      const el = first();
      if (!el || !el.hasAttribute(spec.attribute)) return null;
      const value = el.getAttribute(spec.attribute);
      if (!spec.origin) return value;
      try { return new URL(value, document.baseURI).origin; } catch (e) { return null; }
    }
    case 'style': {
      const el = first();
      if (!el) return null;
      const style = getComputedStyle(el);
      const parent = (el.parentElement || document.documentElement).getBoundingClientRect();
      return {
        property: spec.property,
        actual: style.getPropertyValue(spec.property).trim(),
        fontSize: style.fontSize,
        width: parent.width,
        height: parent.height,
      };
    }
    case 'script':
      return (new Function(spec.script))();
  }
  throw new Error('unknown reader ' + spec.kind);
}
"""

ValueCheck = AssertElement | AssertTextContent | AssertAttribute | AssertStyle | CustomScript


def reader_spec(check: ValueCheck) -> dict[str, Any]:
    """What READER_JS must read for this check."""
    if isinstance(check, AssertElement):
        return {"kind": "count", "selector": check.selector}
    if isinstance(check, AssertTextContent):
        return {"kind": "text", "selector": check.selector}
    if isinstance(check, AssertAttribute):
        # same_origin: the browser resolves the URL (WHATWG rules: "https://a.org@b.org/" is on b.org).
        origin = check.operator == "same_origin"
        return {"kind": "attribute", "selector": check.selector, "attribute": check.attribute, "origin": origin}
    if isinstance(check, AssertStyle):
        return {"kind": "style", "selector": check.selector, "property": check.property, "expected": check.value}
    return {"kind": "script", "script": check.script}


# Runs in the grader's own blank page: a probe with the target's font size, in a box the size
# of the target's parent, is given the expected value and its computed value read back
# ('red', '#f00' and 'rgb(255, 0, 0)' all become the same text). A value the browser does
# not accept for the property stays as written.
NORMALISE_JS = r"""
(spec) => {
  const probe = document.createElement('div');
  probe.style.fontSize = spec.fontSize;
  // A border, outline or column-rule width computes to 0 unless that line has a style.
  if (/^(border(-(top|right|bottom|left))?|outline|column-rule)-width$/.test(spec.property)) {
    probe.style.setProperty(spec.property.replace(/width$/, 'style'), 'solid');
  }
  probe.style.setProperty(spec.property, String(spec.expected));
  if (probe.style.getPropertyValue(spec.property) === '') return String(spec.expected);
  const box = document.createElement('div');
  box.style.cssText = 'position: absolute; left: 0; top: 0; visibility: hidden';
  box.style.width = spec.width + 'px';
  box.style.height = spec.height + 'px';
  box.appendChild(probe);
  document.body.appendChild(box);
  const value = getComputedStyle(probe).getPropertyValue(spec.property).trim();
  box.remove();
  return value;
}
"""


def verdict(check: ValueCheck, read: Any) -> bool:
    """Whether the value READER_JS returned satisfies the check."""
    if isinstance(check, AssertElement):
        return int(read) > 0 if check.operator == "exists" else compare(check.operator, int(read), check.value)
    if isinstance(check, AssertStyle):
        if read is None:
            return False
        actual, expected = read
        return compare(check.operator, actual, expected)
    return compare(check.operator, read, check.value)


def compare(operator: str, actual: Any, expected: Any) -> bool:
    """Apply an operator; a missing actual value (None) fails every operator."""
    if actual is None:
        return False
    if operator == "exists":
        return True
    if operator == "equals":
        return _equal(actual, expected)
    if operator == "not_equals":
        return not _equal(actual, expected)
    if operator in ("greater_than", "less_than"):
        a, b = _number(actual), _number(expected)
        if a is None or b is None:
            return False
        return a > b if operator == "greater_than" else a < b
    text, wanted = str(actual), str(expected)
    if operator == "contains":
        return wanted in text
    if operator == "not_contains":
        return wanted not in text
    if operator == "starts_with":
        return text.startswith(wanted)
    if operator == "ends_with":
        return text.endswith(wanted)
    if operator == "regex":
        return re.search(wanted, text) is not None
    if operator == "same_origin":
        return text == url_origin(wanted)
    raise ValueError(f"unknown operator {operator!r}")


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return float(actual) == float(expected)
    return str(actual) == str(expected)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _NUMBER.match(str(value))
    return float(match.group(1)) if match else None
