"""`item_check`: each item carries its own check, as in the general-abilities regression set.

An item's `check` is `{"kind": ..., ...}` with one of general_set.CHECKS (number, word_count,
uppercase, lowercase, starts_with, ends_with, excludes, json_keys, bullet_list, numbered_list,
answer); no judge is needed. In a comparison, the items' `category` field gives per-category
scores and the drop of the candidate against the baseline, flagged past `drop_threshold` points.
"""

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from tunery_evaljudge.general_set import CHECKS, DEFAULT_DROP_THRESHOLD
from tunery_evaljudge.graders.base import Grader, GradeResult, TemplateStr, clip
from tunery_evaljudge.templates import Sample, SampleFieldError, render


class ItemCheckGrader(Grader):
    type: Literal["item_check"]
    input: TemplateStr = "{{sample.output_text}}"
    # Points (of 100) a category may lose against the baseline before the comparison flags it.
    drop_threshold: float = Field(DEFAULT_DROP_THRESHOLD, ge=0, le=100)

    def grade(self, item: Mapping[str, Any], sample: Sample) -> GradeResult:
        spec = item.get("check")
        kind = spec.get("kind") if isinstance(spec, Mapping) else None
        if kind not in CHECKS:
            return self.result(None, None, f"item.check.kind must be one of {', '.join(CHECKS)}")
        try:
            text = render(self.input, item, sample)
        except SampleFieldError as exc:
            return self.failed(str(exc))
        try:
            passed, why = CHECKS[kind](text, dict(spec))
        except (KeyError, TypeError, ValueError) as exc:
            return self.result(
                None, None, f"item.check of kind {kind!r} is missing or has a bad field: {exc}"
            )
        return self.result(float(passed), passed, None if passed else why, input=clip(text), check=kind)
