"""`string_check`: compares a rendered input with a rendered reference, as OpenAI's grader does.

eq / ne compare exactly; like is "input contains reference", ilike the same ignoring case.
"""

from collections.abc import Mapping
from typing import Any, Literal

from tunery_evaljudge.graders.base import Grader, GradeResult, TemplateStr, clip
from tunery_evaljudge.templates import Sample, SampleFieldError, render

_OPERATIONS = {
    "eq": lambda text, ref: text == ref,
    "ne": lambda text, ref: text != ref,
    "like": lambda text, ref: ref in text,
    "ilike": lambda text, ref: ref.casefold() in text.casefold(),
}


class StringCheckGrader(Grader):
    type: Literal["string_check"]
    input: TemplateStr = "{{sample.output_text}}"
    reference: TemplateStr
    operation: Literal["eq", "ne", "like", "ilike"]

    def grade(self, item: Mapping[str, Any], sample: Sample) -> GradeResult:
        try:
            text = render(self.input, item, sample)
            reference = render(self.reference, item, sample)
        except SampleFieldError as exc:
            return self.failed(str(exc))
        passed = _OPERATIONS[self.operation](text, reference)
        return self.result(float(passed), passed, input=clip(text), reference=clip(reference))
