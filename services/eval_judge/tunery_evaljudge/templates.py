"""Grader templates: `{{item.field}}`, `{{sample.output_text}}`, `{{sample.output_json.field}}`.

The syntax is the one OpenAI's Evals API graders use. `item` is the eval item (a JSON object,
nested fields with dots, list elements by index: `item.choices.0`); `sample` is the model's
answer: `output_text` (its text) and `output_json` (that text parsed as JSON, fields below it).

Two kinds of failure stay apart: a reference that can never resolve (a typo, a field the item
lacks) is a `TemplateError` that names it and fails the eval; an answer that is not JSON, or lacks
a field the template reads, is a `SampleFieldError`: that sample fails its grade, nothing more.
"""

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_REFERENCE = re.compile(r"(item|sample)((?:\.[A-Za-z0-9_\-]+)*)")
SAMPLE_FIELDS = ("output_text", "output_json")


class TemplateError(ValueError):
    """The template refers to something that does not exist."""

    def __init__(self, message: str, reference: str | None = None):
        super().__init__(message)
        self.reference = reference


class SampleFieldError(ValueError):
    """The model's answer lacks what the template reads (not JSON, or no such field)."""


@dataclass(frozen=True)
class Sample:
    """One answer of the model under test, with what the run measured about it."""

    output_text: str
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None  # the request failed; output_text is then empty

    @cached_property
    def output_json(self) -> Any:
        """The answer parsed as JSON; raises SampleFieldError when it is not JSON."""
        try:
            return json.loads(self.output_text)
        except ValueError as exc:
            raise SampleFieldError(f"the answer is not valid JSON ({exc})") from None


@dataclass(frozen=True)
class Reference:
    text: str  # as written between the braces, trimmed
    namespace: str  # "item" | "sample"
    path: tuple[str, ...]


def parse_reference(text: str) -> Reference:
    """The reference inside one `{{...}}`; raises TemplateError when it cannot name anything."""
    text = text.strip()
    match = _REFERENCE.fullmatch(text)
    if match is None:
        raise TemplateError(
            f"unknown reference {{{{{text}}}}}: use {{{{item.<field>}}}}, {{{{sample.output_text}}}} "
            f"or {{{{sample.output_json[.<field>]}}}}",
            text,
        )
    path = tuple(part for part in match.group(2).split(".") if part)
    if match.group(1) == "sample":
        if not path or path[0] not in SAMPLE_FIELDS:
            raise TemplateError(
                f"unknown reference {{{{{text}}}}}: a sample has output_text and output_json", text
            )
        if path[0] == "output_text" and len(path) > 1:
            raise TemplateError(f"unknown reference {{{{{text}}}}}: output_text is a string", text)
    return Reference(text, match.group(1), path)


def references(template: str) -> list[Reference]:
    """Every reference of a template, in order; raises TemplateError on the first bad one."""
    found = [parse_reference(m.group(1)) for m in _PLACEHOLDER.finditer(template)]
    if "{{" in _PLACEHOLDER.sub("", template):
        raise TemplateError("a {{ is never closed with }}")
    return found


def reads_sample(template: str) -> bool:
    return any(ref.namespace == "sample" for ref in references(template))


def _walk(value: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` below `value`; KeyError naming the first missing step."""
    for depth, step in enumerate(path):
        if isinstance(value, Mapping) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            raise KeyError(".".join(path[: depth + 1]))
    return value


def _resolve(ref: Reference, item: Mapping[str, Any], sample: Sample | None) -> Any:
    if ref.namespace == "item":
        try:
            return _walk(item, ref.path)
        except KeyError as missing:
            fields = ", ".join(sorted(item)) or "none"
            raise TemplateError(
                f"unknown reference {{{{{ref.text}}}}}: the item has no field item.{missing.args[0]} "
                f"(its fields: {fields})",
                ref.text,
            ) from None
    if sample is None:
        raise TemplateError(f"{{{{{ref.text}}}}} needs a sample, and there is none here", ref.text)
    if ref.path[0] == "output_text":
        return sample.output_text
    try:
        return _walk(sample.output_json, ref.path[1:])
    except KeyError as missing:
        raise SampleFieldError(f"the answer's JSON has no field {missing.args[0]}") from None


def to_text(value: Any) -> str:
    """Strings as they are, anything else as JSON (so objects and numbers read as in the data)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render(
    template: str,
    item: Mapping[str, Any],
    sample: Sample | None = None,
    quote_sample: Callable[[str, str], str] | None = None,
) -> str:
    """The template with every reference replaced by its value.

    `quote_sample(text, reference)`, when given, wraps each value that comes from the sample:
    the judge uses it to fence off the answer it grades.
    """

    def substitute(match: re.Match) -> str:
        ref = parse_reference(match.group(1))
        text = to_text(_resolve(ref, item, sample))
        if quote_sample is not None and ref.namespace == "sample":
            return quote_sample(text, ref.text)
        return text

    return _PLACEHOLDER.sub(substitute, template)
