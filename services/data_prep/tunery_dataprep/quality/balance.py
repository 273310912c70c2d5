"""`class_imbalance`: a classifier trained on 190 / 5 / 5 learns to answer the big class."""

from collections.abc import Sequence

from tunery_dataprep.quality.base import QualityWarning, make_warning
from tunery_dataprep.quality.labels import LabelSet
from tunery_dataprep.quality.sketch import ExampleSketch
from tunery_dataprep.quality.task import classification_minimum

MAX_RATIO = 5  # largest class / a class: above this, that class is under-represented
SHOWN_CLASSES = 8


def check_class_imbalance(train: Sequence[ExampleSketch], label_sets: list[LabelSet]) -> list[QualityWarning]:
    return [w for ls in label_sets if (w := _imbalance(train, ls))]


def _imbalance(train: Sequence[ExampleSketch], labels: LabelSet) -> QualityWarning | None:
    ranked = labels.counts.most_common()
    largest, top = ranked[0]
    need = classification_minimum(len(ranked))
    small = [(label, count) for label, count in ranked if count * MAX_RATIO < top]
    if not small:
        return None
    shown = " / ".join(str(count) for _, count in ranked[:SHOWN_CLASSES])
    if len(ranked) > SHOWN_CLASSES:
        shown += f" / … ({len(ranked)} classes)"
    names = ", ".join(f"{label!r} ({count})" for label, count in small[:SHOWN_CLASSES])
    below = sum(1 for _, count in small if count < need.per_class)
    message = (
        f"{labels.where.capitalize()} form {len(ranked)} classes of {shown} examples: {names} "
        f"{'has' if len(small) == 1 else 'have'} under 1/{MAX_RATIO} of {largest!r} ({top})"
    )
    if below:
        message += f"; {below} of them below the {need.per_class} per class that {len(ranked)} classes need"
    small_labels = {label for label, _ in small}
    lines = [s.line for s, label in zip(train, labels.labels, strict=True) if label in small_labels]
    return make_warning(
        "class_imbalance",
        "warning",
        message + f". The model will lean towards {largest!r}.",
        lines,
        field=labels.field,
        counts=dict(ranked),
        min_per_class=need.per_class,
        imbalance_ratio=round(top / ranked[-1][1], 1),
    )
