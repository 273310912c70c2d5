"""Two completed runs of one eval compared item by item (compare.py's paired statistics).

Per testing criterion: both pass rates, the delta (candidate minus baseline), its 95% CI, the
p-value and a verdict; criteria that score (score_model, text_similarity) also compare their mean
scores; `item_check` criteria over items with a `category` also report each category's drop
(general_set.compare_with_base: the regression check). With a judge, the two answers to each
item are judged in both orders: wins, ties, losses and a sign test. The runs must be over the same
items, in the same order.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from tunery_common.records import EvalRunRecord

from tunery_evaljudge.compare import compare_pairwise, compare_pass_fail, compare_scores
from tunery_evaljudge.eval_results import grades_of, sample_of
from tunery_evaljudge.general_set import ItemCheck, compare_with_base, score_checks
from tunery_evaljudge.graders.base import GradeResult
from tunery_evaljudge.graders.criteria import AnyGrader
from tunery_evaljudge.graders.item_check import ItemCheckGrader
from tunery_evaljudge.graders.score_model import ScoreModelGrader
from tunery_evaljudge.graders.text_similarity import TextSimilarityGrader
from tunery_evaljudge.judge import Judge

RunOutputs = tuple[EvalRunRecord, Sequence[Mapping[str, Any]]]


def check_same_items(baseline: Sequence[Mapping], candidate: Sequence[Mapping]) -> None:
    if len(baseline) != len(candidate):
        raise ValueError(f"the runs are over different items ({len(baseline)} and {len(candidate)} items)")
    for a, b in zip(baseline, candidate, strict=True):
        if a["datasource_item"] != b["datasource_item"]:
            raise ValueError(f"the runs are over different items (item {a['datasource_item_id']} differs)")


def request_text(output: Mapping[str, Any]) -> str:
    """What the item asked: its last user message, else the item itself."""
    users = [m["content"] for m in output["sample"].get("input") or [] if m.get("role") == "user"]
    return users[-1] if users else json.dumps(output["datasource_item"], ensure_ascii=False)


def _category_checks(outputs: Sequence[Mapping], grades: Sequence[GradeResult]) -> list[ItemCheck] | None:
    checks = []
    for output, grade in zip(outputs, grades, strict=True):
        item = output["datasource_item"]
        if not isinstance(item.get("category"), str):
            return None  # items without categories: the pass rate says it all
        item_id = str(item.get("id", output["datasource_item_id"]))
        checks.append(ItemCheck(id=item_id, category=item["category"], passed=grade.passed is True))
    return checks


def category_drops(
    grader: ItemCheckGrader,
    base_out: Sequence[Mapping],
    base: Sequence[GradeResult],
    cand: Sequence[GradeResult],
) -> dict[str, Any] | None:
    """Each category's score (0-100) in both runs and the candidate's drop, flagged past the threshold."""
    base_checks = _category_checks(base_out, base)
    if base_checks is None:
        return None
    cand_checks = [
        c.model_copy(update={"passed": g.passed is True}) for c, g in zip(base_checks, cand, strict=True)
    ]
    regression = compare_with_base(
        score_checks(cand_checks), score_checks(base_checks), grader.drop_threshold
    )
    return regression.model_dump()


async def pairwise(judge: Judge, baseline: Sequence[Mapping], candidate: Sequence[Mapping]) -> dict[str, Any]:
    wins = ties = losses = failures = 0
    per_item = []
    for a, b in zip(baseline, candidate, strict=True):
        verdict = await judge.compare(request_text(a), sample_of(a).output_text, sample_of(b).output_text)
        if verdict.winner is None:
            failures += 1
        elif verdict.winner == "b":
            wins += 1
        elif verdict.winner == "a":
            losses += 1
        else:
            ties += 1
        per_item.append(
            {"datasource_item_id": a["datasource_item_id"], "winner": verdict.winner, "error": verdict.error}
        )
    result: dict[str, Any] = {"judge": judge.describe(), "judge_failures": failures, "items": per_item}
    if wins + ties + losses:
        result |= asdict(compare_pairwise(wins, ties, losses))
    return result


async def compare_runs(
    graders: Sequence[AnyGrader], baseline: RunOutputs, candidate: RunOutputs, judge: Judge | None = None
) -> dict[str, Any]:
    (base_run, base_out), (cand_run, cand_out) = baseline, candidate
    check_same_items(base_out, cand_out)
    criteria = []
    for index, grader in enumerate(graders):
        base_grades = [grades_of(o)[index] for o in base_out]
        cand_grades = [grades_of(o)[index] for o in cand_out]
        entry: dict[str, Any] = {"testing_criteria": grader.name, "type": grader.type}
        # Not passing (a fail, or no verdict) counts against a run alike.
        entry["pass_fail"] = asdict(
            compare_pass_fail(
                [g.passed is True for g in base_grades], [g.passed is True for g in cand_grades]
            )
        )
        if isinstance(grader, ScoreModelGrader | TextSimilarityGrader):
            try:
                entry["scores"] = asdict(
                    compare_scores([g.score for g in base_grades], [g.score for g in cand_grades])
                )
            except ValueError as exc:
                entry["scores"] = {"error": str(exc)}
        if isinstance(grader, ItemCheckGrader):
            entry["categories"] = category_drops(grader, base_out, base_grades, cand_grades)
        criteria.append(entry)
    return {
        "object": "eval.comparison",
        "eval_id": base_run.eval_id,
        "baseline_run_id": base_run.id,
        "candidate_run_id": cand_run.id,
        "baseline_model": base_run.model,
        "candidate_model": cand_run.model,
        "n_items": len(base_out),
        "testing_criteria": criteria,
        "pairwise": None if judge is None else await pairwise(judge, base_out, cand_out),
    }
