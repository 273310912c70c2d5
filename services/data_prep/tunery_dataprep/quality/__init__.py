"""Dataset quality checks: what in a training file will hurt a fine-tune, and what to do about it.

Everything works on per-example sketches (`sketch_examples`), so a file of any size is checked in
the memory of its sketches. `run_checks` returns the warnings, `recommendations` the actions.
"""

from collections.abc import Sequence

from tunery_dataprep.quality.balance import check_class_imbalance
from tunery_dataprep.quality.base import CheckContext, QualityWarning
from tunery_dataprep.quality.diversity import check_low_diversity
from tunery_dataprep.quality.duplicates import (
    check_exact_duplicates,
    check_inconsistent_labels,
    check_near_duplicates,
    check_overlap,
    near_identical,
)
from tunery_dataprep.quality.facts import check_factual_content
from tunery_dataprep.quality.labels import find_label_sets
from tunery_dataprep.quality.recommendations import recommendations
from tunery_dataprep.quality.sketch import (
    ExampleSketch,
    ExampleText,
    example_texts,
    sketch_example,
    sketch_examples,
)
from tunery_dataprep.quality.system_prompt import check_long_system_prompt, check_system_messages
from tunery_dataprep.quality.task import TASKS, check_too_few, detect_task
from tunery_dataprep.quality.truncation import check_truncated

__all__ = [
    "TASKS",
    "CheckContext",
    "ExampleSketch",
    "ExampleText",
    "QualityWarning",
    "detect_task",
    "example_texts",
    "recommendations",
    "run_checks",
    "sketch_example",
    "sketch_examples",
]


def run_checks(
    train: Sequence[ExampleSketch], valid: Sequence[ExampleSketch] | None, ctx: CheckContext
) -> list[QualityWarning]:
    if ctx.task is not None and ctx.task not in TASKS:
        raise ValueError(f"unknown task {ctx.task!r}: one of {', '.join(TASKS)}")
    label_sets = find_label_sets(train)
    task = ctx.task or detect_task(train, label_sets=label_sets)
    near = near_identical(train, valid or [])
    return [
        *check_too_few(train, task, label_sets),
        *check_class_imbalance(train, label_sets),
        *check_exact_duplicates(train),
        *check_near_duplicates(train, near),
        *(check_overlap(train, valid, near) if valid else []),
        *check_inconsistent_labels(train, near, label_sets),
        *check_low_diversity(train),
        *check_system_messages(train),
        *check_long_system_prompt(train, ctx),
        *check_truncated(train, ctx),
        *check_factual_content(train),
    ]
