"""Is this a classifier? Label sets found statistically in the answers.

A label set is a small vocabulary that nearly every example draws its answer from (or one field
of its JSON answer): few distinct values relative to the number of examples, almost none of them
used once. Open-ended answers fail it however short they are: their values rarely repeat.
"""

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from tunery_dataprep.quality.sketch import ExampleSketch

MIN_COVERAGE = 0.9  # share of examples that must carry a value
MAX_CLASSES = 200
MIN_MEAN_PER_CLASS = 3  # n / classes: fewer and the values are answers, not classes
MAX_SINGLETON_SHARE = 0.1  # share of examples whose value occurs once


@dataclass(frozen=True)
class LabelSet:
    field: str | None  # None: the whole answer is the label; else the JSON field holding it
    labels: list[str | None]  # per example, None where it has none
    counts: Counter

    @property
    def where(self) -> str:
        return "the answers" if self.field is None else f"the JSON field {self.field!r}"


def find_label_sets(train: Sequence[ExampleSketch]) -> list[LabelSet]:
    """The plain-answer label set if there is one, then the JSON fields that are label sets."""
    found = _label_set(None, [s.label for s in train], len(train))
    sets = [found] if found else []
    per_field: dict[str, list[str | None]] = defaultdict(lambda: [None] * len(train))
    for i, sketch in enumerate(train):
        for key, value in sketch.fields:
            per_field[key][i] = value
    for key, labels in per_field.items():
        found = _label_set(key, labels, len(train))
        if found:
            sets.append(found)
    return sets


def _label_set(field: str | None, labels: list[str | None], n: int) -> LabelSet | None:
    counts = Counter(label for label in labels if label is not None)
    present = sum(counts.values())
    if not n or present < MIN_COVERAGE * n or not 2 <= len(counts) <= MAX_CLASSES:
        return None
    if n < MIN_MEAN_PER_CLASS * len(counts):
        return None
    if sum(1 for c in counts.values() if c == 1) > MAX_SINGLETON_SHARE * present:
        return None
    return LabelSet(field, labels, counts)
