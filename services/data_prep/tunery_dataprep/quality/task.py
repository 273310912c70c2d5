"""What kind of fine-tune this is, and how many examples that kind needs (`too_few_examples`).

The task is detected from statistics of the answers (never from keywords): a label set means
classification; JSON answers mean extraction when their words come from the prompt, format
generation otherwise; answers much shorter than long prompts and made of their words mean
summarisation; answers about as long as their prompt and sharing much of it mean a rewrite (tone
or style). Anything else is "general".
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tunery_dataprep.quality.base import QualityWarning, make_warning
from tunery_dataprep.quality.labels import LabelSet, find_label_sets
from tunery_dataprep.quality.sketch import ExampleSketch

TASKS = ("classification", "extraction", "format", "summarization", "tone", "general")

JSON_SHARE = 0.8  # answers that are JSON for a structured-output task
STRUCTURED_SHARE = 0.5  # answers with markdown lists, tables or code for format generation
COPY_EXTRACTION = 50  # median % of answer words found in the prompt
SUMMARY_MIN_PROMPT_WORDS = 60
SUMMARY_MAX_RATIO = 0.5  # answer words / prompt words
SUMMARY_MIN_COPY = 50
REWRITE_MIN_PROMPT_WORDS = 8
REWRITE_RATIO = (0.5, 2.0)
REWRITE_MIN_COPY = 40


@dataclass(frozen=True)
class Minimum:
    examples: int
    recommended: str | None = None  # for messages, e.g. "200-500"
    recommended_from: int = 0  # its lower end
    per_class: int = 0


# Minimum examples per task. Classification: 2-5 classes >= 50 (recommended 200-500); 10+ classes
# >= 200 and >= 20 per class; 6-9 classes in between (see `classification_minimum`).
MINIMUMS = {
    "format": Minimum(100),
    "extraction": Minimum(100),  # structured output, like format generation
    "tone": Minimum(200),
    "summarization": Minimum(50),
    "general": Minimum(50),  # clear gains usually start at 50-100 examples
}


def classification_minimum(n_classes: int) -> Minimum:
    if n_classes <= 5:
        return Minimum(50, "200-500", 200, per_class=math.ceil(50 / n_classes))
    if n_classes < 10:  # between the 5-class row (50) and the 10-class row (200)
        total = 50 + 30 * (n_classes - 5)
    else:
        total = max(200, 20 * n_classes)
    return Minimum(total, f"{50 * n_classes}+", 50 * n_classes, per_class=math.ceil(total / n_classes))


def detect_task(train: Sequence[ExampleSketch], *, label_sets: list[LabelSet] | None = None) -> str:
    """The task the checks assume when none is given."""
    if not train:
        return "general"
    label_sets = find_label_sets(train) if label_sets is None else label_sets
    if any(ls.field is None for ls in label_sets):
        return "classification"
    kinds = [s.kind for s in train]
    if kinds.count("json") >= JSON_SHARE * len(train):
        if _label_fields_only(train, label_sets):
            return "classification"
        return "extraction" if _median([s.copy_pct for s in train]) >= COPY_EXTRACTION else "format"
    if kinds.count("structured") >= STRUCTURED_SHARE * len(train):
        return "format"
    prompt_words = _median([s.prompt_words for s in train])
    ratio = _median([s.answer_words / max(1, s.prompt_words) for s in train])
    copy = _median([s.copy_pct for s in train])
    if prompt_words >= SUMMARY_MIN_PROMPT_WORDS and ratio <= SUMMARY_MAX_RATIO and copy >= SUMMARY_MIN_COPY:
        return "summarization"
    if prompt_words >= REWRITE_MIN_PROMPT_WORDS and REWRITE_RATIO[0] <= ratio <= REWRITE_RATIO[1]:
        if copy >= REWRITE_MIN_COPY:
            return "tone"
    return "general"


def check_too_few(
    train: Sequence[ExampleSketch], task: str, label_sets: list[LabelSet]
) -> list[QualityWarning]:
    if task == "classification" and label_sets:
        return _too_few_per_class(train, label_sets[0])
    n, need = len(train), MINIMUMS.get(task, MINIMUMS["general"])
    if n >= need.examples:
        return []
    message = f"{n} examples for a {task} task: at least {need.examples} are needed."
    details = {"task": task, "n_examples": n, "minimum": need.examples}
    return [make_warning("too_few_examples", "warning", message, **details)]


def _too_few_per_class(train: Sequence[ExampleSketch], labels: LabelSet) -> list[QualityWarning]:
    n, n_classes = len(train), len(labels.counts)
    need = classification_minimum(n_classes)
    # the table sets a per-class floor from 10 classes on; below, the total decides
    small = [c for c, count in labels.counts.items() if count < need.per_class] if n_classes >= 10 else []
    if n >= need.examples and not small:
        return []
    message = (
        f"{n} examples for classification into {n_classes} classes: at least {need.examples} are "
        f"needed, {need.recommended} recommended"
    )
    if small:
        message += f"; {len(small)} classes have fewer than {need.per_class} examples each"
    lines = [s.line for s, label in zip(train, labels.labels, strict=True) if label in small]
    return [
        make_warning(
            "too_few_examples",
            "warning",
            message + ".",
            lines,
            task="classification",
            n_examples=n,
            minimum=need.examples,
            recommended=need.recommended,
            n_classes=n_classes,
            min_per_class=need.per_class,
            classes_below_minimum=sorted(small),
        )
    ]


def _label_fields_only(train: Sequence[ExampleSketch], label_sets: list[LabelSet]) -> bool:
    """JSON answers made of label fields only ({"category": ..., "priority": ...}) are a classifier's."""
    keys = {ls.field for ls in label_sets if ls.field}
    only = sum(1 for s in train if s.fields and all(key in keys for key, _ in s.fields))
    return bool(keys) and only >= JSON_SHARE * len(train)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else 0.0
