"""Grading a run's items and summing them up in the shape of OpenAI's eval run objects.

An item passes when every grader that gives a verdict passes it; it is errored when the model
gave no answer or a grader could not grade it (a judge failure); else it failed. Beside OpenAI's
counts, `aggregates` keeps per-criterion figures (pass rate, mean score, classification metrics),
latency percentiles, format compliance, tokens and the judge used.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from openai import AsyncOpenAI
from pydantic import TypeAdapter

from tunery_evaljudge.eval_data import RunItem
from tunery_evaljudge.graders.base import GradeResult
from tunery_evaljudge.graders.classification import ClassificationGrader
from tunery_evaljudge.graders.criteria import AnyGrader, grade_sample
from tunery_evaljudge.graders.json_checks import JsonSchemaGrader, JsonValidGrader
from tunery_evaljudge.graders.score_model import ScoreModelGrader
from tunery_evaljudge.run_stats import run_stats
from tunery_evaljudge.templates import Sample

OUTPUT_ITEMS = TypeAdapter(list[dict[str, Any]])


def item_status(sample: Sample, grades: Sequence[GradeResult]) -> str:
    """ "pass", "fail" or "error" (no answer, or a grader that could not grade)."""
    if sample.error is not None or any(g.passed is None and g.error for g in grades):
        return "error"
    return "pass" if all(g.passed is not False for g in grades) else "fail"


async def grade_item(
    graders: Sequence[AnyGrader], run_item: RunItem, sample: Sample, judge: AsyncOpenAI | None
) -> list[GradeResult]:
    return [await grade_sample(g, run_item.item, sample, judge) for g in graders]


def output_item(
    ids: Mapping[str, str],
    run_item: RunItem,
    sample: Sample,
    grades: Sequence[GradeResult],
    prompt: list[dict[str, str]] | None,
    model: str | None,
    created_at: int,
) -> dict[str, Any]:
    """One `eval.run.output_item`; `ids` holds its id, eval_id and run_id."""
    usage = {
        "prompt_tokens": sample.prompt_tokens or 0,
        "completion_tokens": sample.completion_tokens or 0,
        "total_tokens": (sample.prompt_tokens or 0) + (sample.completion_tokens or 0),
        "cached_tokens": 0,
    }
    return {
        **ids,
        "object": "eval.run.output_item",
        "created_at": created_at,
        "datasource_item_id": run_item.index,
        "datasource_item": run_item.item,
        "status": item_status(sample, grades),
        "results": [g.model_dump() for g in grades],
        "sample": {
            "input": prompt or [],
            "output": [{"role": "assistant", "content": sample.output_text}],
            "model": model or "",
            "usage": usage,
            "error": None if sample.error is None else {"code": "sample_failed", "message": sample.error},
            "latency_ms": sample.latency_ms,
        },
    }


def sample_of(output: Mapping[str, Any]) -> Sample:
    """The sample an output item recorded."""
    recorded = output["sample"]
    usage = recorded.get("usage") or {}
    error = recorded.get("error")
    return Sample(
        output_text=recorded["output"][0]["content"] if recorded.get("output") else "",
        latency_ms=recorded.get("latency_ms"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        error=error["message"] if error else None,
    )


def grades_of(output: Mapping[str, Any]) -> list[GradeResult]:
    return [GradeResult.model_validate(r) for r in output["results"]]


def _criterion_summary(grader: AnyGrader, results: list[GradeResult]) -> dict[str, Any]:
    verdicts = [r.passed for r in results if r.passed is not None]
    scores = [r.score for r in results if r.score is not None]
    summary: dict[str, Any] = {
        "type": grader.type,
        "passed": sum(1 for v in verdicts if v),
        "failed": sum(1 for v in verdicts if not v),
        "not_graded": sum(1 for r in results if r.passed is None and r.error),
        "pass_rate": sum(verdicts) / len(verdicts) if verdicts else None,
        "mean_score": sum(scores) / len(scores) if scores else None,
    }
    if isinstance(grader, ClassificationGrader):
        graded = [r for r in results if "expected" in r.details]
        if graded:
            summary["classification"] = grader.aggregate(graded).model_dump()
    return summary


def summarize(graders: Sequence[AnyGrader], outputs: Sequence[Mapping[str, Any]], judge: dict | None) -> dict:
    """result_counts, per_testing_criteria_results and aggregates of a finished run."""
    statuses = [o["status"] for o in outputs]
    per_grader = {g.name: [grades_of(o)[i] for o in outputs] for i, g in enumerate(graders)}
    criteria = {g.name: _criterion_summary(g, per_grader[g.name]) for g in graders}
    format_graders = [i for i, g in enumerate(graders) if isinstance(g, JsonValidGrader | JsonSchemaGrader)]
    compliant = None
    if format_graders:
        first = format_graders[0]
        compliant = [grades_of(o)[first].passed for o in outputs]
    stats = run_stats([sample_of(o) for o in outputs], compliant)
    uses_judge = any(isinstance(g, ScoreModelGrader) for g in graders)
    return {
        "result_counts": {
            "total": len(outputs),
            "passed": statuses.count("pass"),
            "failed": statuses.count("fail"),
            "errored": statuses.count("error"),
        },
        "per_testing_criteria_results": [
            {"testing_criteria": name, "passed": c["passed"], "failed": c["failed"]}
            for name, c in criteria.items()
        ],
        "aggregates": {
            "criteria": criteria,
            "latency": stats.latency.model_dump(),
            "tokens": stats.tokens.model_dump(),
            "format_compliance_rate": stats.format_compliance_rate,
            "n_sample_errors": stats.n_errors,
            "judge": judge if uses_judge else None,
        },
    }
