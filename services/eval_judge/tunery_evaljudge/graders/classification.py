"""`classification`: the class label an answer gives, against the item's label.

The label comes from the rendered `input`: the answer's text (`{{sample.output_text}}`, the
default) or a JSON field of it (`{{sample.output_json.category}}`). Extraction, case-insensitive:
the whole text is a label (quotes and a final period aside); else, when `labels` are given, the one
label the text mentions as a whole word or phrase (the longest when one contains another). No
label, or two different ones, is no prediction: the item fails and counts under NO_LABEL.

Per item it passes or fails; `aggregate` gives accuracy, macro-F1, per-class precision / recall /
F1 and the confusion matrix (scikit-learn), over `labels` or, when none are given, the labels the
items expect.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tunery_evaljudge.graders.base import Grader, GradeResult, TemplateStr
from tunery_evaljudge.templates import Sample, SampleFieldError, render

NO_LABEL = "(no label)"  # the answer names no class, or several
OTHER = "(other)"  # a label outside the known classes

_EDGES = "\"'`*.,!;: \t\r\n"


def normalise(text: str) -> str:
    return " ".join(text.strip(_EDGES).split()).casefold()


def mentions(text: str, label: str) -> bool:
    """Whether `text` says `label` as a whole word or phrase, ignoring case and spacing."""
    words = r"\s+".join(re.escape(word) for word in label.split())
    return re.search(rf"(?<!\w){words}(?!\w)", text, re.IGNORECASE) is not None


def extract_label(text: str, labels: Sequence[str] | None) -> str | None:
    """The label `text` gives, spelled as in `labels`; the normalised text itself without labels."""
    key = normalise(text)
    if not labels:
        return key or None
    by_key = {normalise(label): label for label in labels}
    if key in by_key:
        return by_key[key]
    found = [label for label in labels if mentions(text, label)]
    # "billing dispute" mentioned means "billing" is too: keep the longest of nested mentions.
    found = [f for f in found if not any(o != f and normalise(f) in normalise(o) for o in found)]
    return found[0] if len(found) == 1 else None


class ClassMetrics(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class ClassificationReport(BaseModel):
    n: int
    accuracy: float
    macro_f1: float  # over the known labels
    per_class: dict[str, ClassMetrics]
    labels: list[str]  # rows (expected) and columns (predicted) of the matrix, in that order
    confusion_matrix: list[list[int]]


class ClassificationGrader(Grader):
    type: Literal["classification"]
    input: TemplateStr = "{{sample.output_text}}"
    reference: TemplateStr
    labels: list[str] | None = Field(default=None, min_length=2)

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        keys = [normalise(label) for label in labels or []]
        if "" in keys:
            raise ValueError("a label is empty")
        if len(set(keys)) != len(keys):
            raise ValueError("labels repeat (they are compared ignoring case)")
        return labels

    def grade(self, item: Mapping[str, Any], sample: Sample) -> GradeResult:
        expected = self._expected(render(self.reference, item))
        try:
            text = render(self.input, item, sample)
        except SampleFieldError as exc:
            return self.failed(str(exc), expected=expected, predicted=None)
        predicted = extract_label(text, self.labels)
        passed = predicted is not None and normalise(predicted) == normalise(expected)
        return self.result(float(passed), passed, expected=expected, predicted=predicted)

    def _expected(self, reference: str) -> str:
        """The item's label, spelled as in `labels` when it is one of them."""
        for label in self.labels or []:
            if normalise(label) == normalise(reference):
                return label
        return reference.strip() if self.labels else normalise(reference)

    def aggregate(self, results: Sequence[GradeResult]) -> ClassificationReport:
        """The metrics over every graded item of a run."""
        if not results:
            raise ValueError("no results to aggregate")
        expected = [r.details["expected"] for r in results]
        known = list(self.labels or sorted(set(expected)))
        # Expected labels outside `labels` still count: the report shows them rather than hiding items.
        known += sorted(set(expected) - set(known))
        predicted = [_bucket(r.details.get("predicted"), known) for r in results]
        columns = known + [extra for extra in (OTHER, NO_LABEL) if extra in predicted]
        precision, recall, f1, support = precision_recall_fscore_support(
            expected, predicted, labels=known, zero_division=0
        )
        return ClassificationReport(
            n=len(results),
            accuracy=float(accuracy_score(expected, predicted)),
            macro_f1=float(f1.mean()),
            per_class={
                label: ClassMetrics(precision=float(p), recall=float(r), f1=float(f_), support=int(s))
                for label, p, r, f_, s in zip(known, precision, recall, f1, support, strict=True)
            },
            labels=columns,
            confusion_matrix=confusion_matrix(expected, predicted, labels=columns).tolist(),
        )


def _bucket(predicted: str | None, known: list[str]) -> str:
    if predicted is None:
        return NO_LABEL
    return predicted if predicted in known else OTHER
