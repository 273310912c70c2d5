"""The general-abilities regression set: did fine-tuning cost the model what it could already do?

Each item (data/general_abilities.jsonl, built by general_set_build) carries a check that needs
no judge. An eval run reads them as the `general_abilities` data source (`eval_items`), graded by
the `item_check` grader; `score_checks` scores checked answers per category (0-100) and
`compare_with_base` reports each category's drop against the base model's scores and flags a
drop over the threshold, with the usual remedy: mixing general examples into the training data.
"""

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tunery_evaljudge.graders.classification import mentions
from tunery_evaljudge.graders.json_checks import JsonSchemaGrader
from tunery_evaljudge.templates import Sample

DATA_FILE = Path(__file__).parent / "data" / "general_abilities.jsonl"
DEFAULT_DROP_THRESHOLD = 5.0  # points on a 0-100 scale
MIX_ADVICE = (
    "Mix 10-20% general-purpose chat examples into the training data (for example "
    "`tunery data mix train.jsonl --general general.jsonl --fraction 0.15 -o mixed.jsonl`) and train again. "
    "Do not train on this regression set itself: it would stop measuring the loss."
)

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_BULLET = re.compile(r"[-*•]\s+\S")
_NUMBERED = re.compile(r"(\d+)[.)]\s+\S")
_TRIM = " \t\r\n\"'.!?"


@dataclass(frozen=True)
class GeneralItem:
    id: str
    category: str
    messages: list[dict[str, str]]
    check: dict[str, Any]

    @property
    def prompt(self) -> list[dict[str, str]]:
        """What the model is asked: every message before the reference answer."""
        return self.messages[:-1]

    @property
    def reference(self) -> str:
        return self.messages[-1]["content"]


def load_general_set(path: Path = DATA_FILE) -> list[GeneralItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            items.append(GeneralItem(**json.loads(line)))
    return items


def eval_items(items: Sequence[GeneralItem] | None = None) -> list[dict[str, Any]]:
    """The set as eval items: the prompt under `messages`, the reference, the category, the check."""
    return [
        {
            "id": item.id,
            "category": item.category,
            "messages": item.prompt,
            "reference": item.reference,
            "check": item.check,
        }
        for item in (load_general_set() if items is None else items)
    ]


# Each check: (answer, the item's check spec) -> (passed, why it failed or "").


def _number(answer: str, spec: dict) -> tuple[bool, str]:
    numbers = _NUMBER.findall(answer)
    if not numbers:
        return False, "no number in the answer"
    last = float(numbers[-1].replace(",", ""))  # the result comes last in "12 x 7 = 84"
    return last == spec["value"], f"the answer's number is {numbers[-1]}, expected {spec['value']}"


def _word_count(answer: str, spec: dict) -> tuple[bool, str]:
    n = len(_WORD.findall(answer))
    return n == spec["n"], f"{n} words, expected {spec['n']}"


def _uppercase(answer: str, spec: dict) -> tuple[bool, str]:
    has_letters = any(c.isalpha() for c in answer)
    return has_letters and answer == answer.upper(), "not entirely in uppercase"


def _lowercase(answer: str, spec: dict) -> tuple[bool, str]:
    has_letters = any(c.isalpha() for c in answer)
    return has_letters and answer == answer.lower(), "not entirely in lowercase"


def _starts_with(answer: str, spec: dict) -> tuple[bool, str]:
    words = _WORD.findall(answer)
    ok = bool(words) and words[0].casefold() == spec["word"].casefold()
    return ok, f'does not begin with "{spec["word"]}"'


def _ends_with(answer: str, spec: dict) -> tuple[bool, str]:
    ok = answer.strip(_TRIM).casefold().endswith(spec["phrase"].strip(_TRIM).casefold())
    return ok, f'does not end with "{spec["phrase"]}"'


def _excludes(answer: str, spec: dict) -> tuple[bool, str]:
    ok = bool(answer.strip()) and spec["text"] not in answer
    return ok, f"contains {spec['text']!r}" if answer.strip() else "empty answer"


def _json_keys(answer: str, spec: dict) -> tuple[bool, str]:
    schema = {
        "type": "object",
        "properties": {key: {} for key in spec["keys"]},
        "required": spec["keys"],
        "additionalProperties": False,
    }
    grader = JsonSchemaGrader.model_validate({"type": "json_schema", "name": "format", "schema": schema})
    result = grader.grade({}, Sample(answer))
    return bool(result.passed), result.error or ""


def _lines(answer: str) -> list[str]:
    return [line.strip() for line in answer.strip().splitlines() if line.strip()]


def _bullet_list(answer: str, spec: dict) -> tuple[bool, str]:
    lines = _lines(answer)
    if not lines or not all(_BULLET.match(line) for line in lines):
        return False, "not only bulleted lines"
    return len(lines) == spec["n"], f"{len(lines)} items, expected {spec['n']}"


def _numbered_list(answer: str, spec: dict) -> tuple[bool, str]:
    numbers = [_NUMBERED.match(line) for line in _lines(answer)]
    if not numbers or not all(numbers):
        return False, "not only numbered lines"
    if [int(m.group(1)) for m in numbers] != list(range(1, len(numbers) + 1)):
        return False, "not numbered 1, 2, 3, ..."
    return len(numbers) == spec["n"], f"{len(numbers)} items, expected {spec['n']}"


def _answer(answer: str, spec: dict) -> tuple[bool, str]:
    ok = any(mentions(answer, alias) for alias in spec["aliases"])
    return ok, f"does not say {' or '.join(spec['aliases'])}"


CHECKS: dict[str, Callable[[str, dict], tuple[bool, str]]] = {
    "number": _number,
    "word_count": _word_count,
    "uppercase": _uppercase,
    "lowercase": _lowercase,
    "starts_with": _starts_with,
    "ends_with": _ends_with,
    "excludes": _excludes,
    "json_keys": _json_keys,
    "bullet_list": _bullet_list,
    "numbered_list": _numbered_list,
    "answer": _answer,
}


class ItemCheck(BaseModel):
    id: str
    category: str
    passed: bool
    reason: str | None = None  # why it failed


def check_answer(item: GeneralItem, answer: str) -> ItemCheck:
    passed, why = CHECKS[item.check["kind"]](answer, item.check)
    return ItemCheck(id=item.id, category=item.category, passed=passed, reason=None if passed else why)


class CategoryScore(BaseModel):
    n: int
    passed: int
    score: float  # percent of items passed, 0-100


class GeneralScores(BaseModel):
    categories: dict[str, CategoryScore]
    overall: CategoryScore
    items: list[ItemCheck]


def _score(checks: Sequence[ItemCheck]) -> CategoryScore:
    passed = sum(c.passed for c in checks)
    return CategoryScore(n=len(checks), passed=passed, score=100 * passed / len(checks))


def score_general_set(items: Sequence[GeneralItem], answers: Mapping[str, str]) -> GeneralScores:
    """Scores per category of a model's answers, keyed by item id (every item needs one)."""
    missing = [item.id for item in items if item.id not in answers]
    if missing:
        raise ValueError(f"no answer for {len(missing)} items: {', '.join(missing[:5])}")
    return score_checks([check_answer(item, answers[item.id]) for item in items])


def score_checks(checks: Sequence[ItemCheck]) -> GeneralScores:
    """Scores per category of checked answers."""
    categories = sorted({c.category for c in checks})
    return GeneralScores(
        categories={cat: _score([c for c in checks if c.category == cat]) for cat in categories},
        overall=_score(checks),
        items=checks,
    )


class CategoryDrop(BaseModel):
    category: str  # "overall" for all items together
    base_score: float
    score: float
    drop: float  # points lost against the base model; negative when it improved
    flagged: bool


class GeneralRegression(BaseModel):
    threshold_points: float
    categories: list[CategoryDrop]
    overall: CategoryDrop
    flagged: list[str]
    advice: str | None


def _drop(category: str, base: CategoryScore, tuned: CategoryScore, threshold: float) -> CategoryDrop:
    drop = base.score - tuned.score
    return CategoryDrop(
        category=category, base_score=base.score, score=tuned.score, drop=drop, flagged=drop > threshold
    )


def compare_with_base(
    scores: GeneralScores, base: GeneralScores, threshold_points: float = DEFAULT_DROP_THRESHOLD
) -> GeneralRegression:
    """The fine-tuned model's scores against its base model's, category by category."""
    if scores.categories.keys() != base.categories.keys():
        raise ValueError("the two score sets cover different categories")
    drops = [
        _drop(cat, base.categories[cat], scores.categories[cat], threshold_points)
        for cat in scores.categories
    ]
    overall = _drop("overall", base.overall, scores.overall, threshold_points)
    flagged = [d for d in [*drops, overall] if d.flagged]
    advice = None
    if flagged:
        lost = ", ".join(f"{d.category} -{d.drop:.1f} points" for d in flagged)
        advice = f"General abilities dropped ({lost}; threshold {threshold_points:g}). {MIX_ADVICE}"
    return GeneralRegression(
        threshold_points=threshold_points,
        categories=drops,
        overall=overall,
        flagged=[d.category for d in flagged],
        advice=advice,
    )
