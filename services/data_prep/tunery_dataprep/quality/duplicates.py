"""Repeats: `duplicate_examples`, `near_duplicates`, `train_validation_overlap`, `inconsistent_labels`.

"Near-identical" means an estimated Jaccard similarity of at least 0.8 between the sets of word
shingles (the 8 bytes from each word start, about a word bigram): one word changed in every 20 or
so, or the same text with different casing, punctuation and spacing.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tunery_dataprep.quality.base import QualityWarning, lines_text, make_warning, plural
from tunery_dataprep.quality.labels import LabelSet
from tunery_dataprep.quality.lsh import NEAR_IDENTICAL, NEAR_IDENTICAL_EXAMPLE, cluster_ids, groups
from tunery_dataprep.quality.sketch import ExampleSketch, signature_matrix

SHOWN_GROUPS = 10  # groups listed in a warning's details


@dataclass(frozen=True)
class NearIdentical:
    prompt_ids: np.ndarray  # a group id per row of train then validation: near-identical prompts
    example_ids: np.ndarray  # a group id per training row: near-identical prompts and answers


def near_identical(train: Sequence[ExampleSketch], valid: Sequence[ExampleSketch]) -> NearIdentical:
    train_sig = signature_matrix(train)
    both = np.vstack([train_sig, signature_matrix(valid)])
    return NearIdentical(cluster_ids(both, NEAR_IDENTICAL), cluster_ids(train_sig, NEAR_IDENTICAL_EXAMPLE))


def _key(sketch: ExampleSketch) -> tuple[int, int, int]:
    return sketch.system_hash, sketch.prompt_hash, sketch.answer_hash


def check_exact_duplicates(train: Sequence[ExampleSketch]) -> list[QualityWarning]:
    first: dict[tuple[int, int, int], int] = {}
    repeats: list[tuple[int, int]] = []  # (line, line of its first copy)
    for sketch in train:
        original = first.setdefault(_key(sketch), sketch.line)
        if original != sketch.line:
            repeats.append((sketch.line, original))
    if not repeats:
        return []
    examples = ", ".join(f"line {line} = line {original}" for line, original in repeats[:3])
    return [
        make_warning(
            "duplicate_examples",
            "warning",
            f"{plural(len(repeats), 'example', 'repeat')} an earlier one (same system prompt, prompt and "
            f"answer, ignoring case, punctuation and spacing), e.g. {examples}: each copy counts again in "
            "training, and a random split puts copies on both sides.",
            [line for line, _ in repeats],
            n_duplicates=len(repeats),
            pairs=[list(pair) for pair in repeats[:SHOWN_GROUPS]],
        )
    ]


def check_near_duplicates(train: Sequence[ExampleSketch], near: NearIdentical) -> list[QualityWarning]:
    """Near-identical examples that are not exact copies (those are `duplicate_examples`)."""
    extra: list[int] = []
    shown: list[list[int]] = []
    for rows in groups(near.example_ids):
        seen = {_key(train[rows[0]])}
        lines = [train[rows[0]].line]
        for row in rows[1:]:
            if _key(train[row]) not in seen:
                seen.add(_key(train[row]))
                lines.append(train[row].line)
        if len(lines) > 1:
            extra.extend(lines[1:])
            if len(shown) < SHOWN_GROUPS:
                shown.append(lines)
    if not extra:
        return []
    return [
        make_warning(
            "near_duplicates",
            "warning",
            f"{plural(len(extra), 'example', 'nearly repeat')} another one (prompt and answer the same but "
            f"for a few words), e.g. {lines_text(shown[0])}: they add little but weight.",
            extra,
            n_near_duplicates=len(extra),
            groups=shown,
        )
    ]


def check_overlap(
    train: Sequence[ExampleSketch], valid: Sequence[ExampleSketch], near: NearIdentical
) -> list[QualityWarning]:
    """Validation prompts that are (near) copies of training prompts make validation loss look better."""
    n_train = len(train)
    train_prompts = {s.prompt_hash for s in train}
    leaked: list[tuple[int, int]] = []  # (validation line, a training line with that prompt)
    for rows in groups(near.prompt_ids):
        if rows[0] >= n_train:
            continue  # no training row in this group (rows ascend: training rows come first)
        leaked.extend((valid[row - n_train].line, train[rows[0]].line) for row in rows if row >= n_train)
    if not leaked:
        return []
    by_line = {s.line: s for s in valid}
    exact = sum(1 for line, _ in leaked if by_line[line].prompt_hash in train_prompts)
    share = len(leaked) / len(valid)
    return [
        make_warning(
            "train_validation_overlap",
            "warning",
            f"{len(leaked)} of {len(valid)} validation examples ({share:.0%}) repeat a training prompt "
            f"({exact} exactly, {len(leaked) - exact} nearly), e.g. validation line {leaked[0][0]} = "
            f"training line {leaked[0][1]}: validation loss will look better than the model is. Lines are "
            "those of the validation file.",
            [line for line, _ in leaked],
            n_exact=exact,
            n_near=len(leaked) - exact,
            share=round(share, 3),
            pairs=[list(pair) for pair in leaked[:SHOWN_GROUPS]],
        )
    ]


def check_inconsistent_labels(
    train: Sequence[ExampleSketch], near: NearIdentical, label_sets: list[LabelSet]
) -> list[QualityWarning]:
    """Near-identical prompts (under the same system prompt) whose labels differ."""
    n_train = len(train)
    return [w for labels in label_sets if (w := _conflicts(train, near.prompt_ids[:n_train], labels))]


def _conflicts(
    train: Sequence[ExampleSketch], prompt_ids: np.ndarray, labels: LabelSet
) -> QualityWarning | None:
    lines: list[int] = []
    shown: list[dict] = []
    n_groups = 0
    for rows in groups(prompt_ids):
        by_system: dict[int, list[int]] = {}
        for row in rows:
            if labels.labels[row] is not None:
                by_system.setdefault(train[row].system_hash, []).append(row)
        for members in by_system.values():
            counts = Counter(labels.labels[row] for row in members)
            if len(counts) > 1:
                n_groups += 1
                lines.extend(train[row].line for row in members)
                if len(shown) < SHOWN_GROUPS:
                    shown.append({"lines": [train[row].line for row in members], "labels": dict(counts)})
    if not lines:
        return None
    first = shown[0]
    return make_warning(
        "inconsistent_labels",
        "warning",
        f"{plural(n_groups, 'group')} of near-identical prompts with different labels in {labels.where}, "
        f"e.g. {lines_text(first['lines'])}: "
        f"{', '.join(map(repr, first['labels']))}. The model cannot learn both: fix the labels or make the "
        "prompts say what tells them apart.",
        lines,
        field=labels.field,
        n_groups=n_groups,
        groups=shown,
    )
