"""Testing criteria: grader configs checked field by field, and one entry point to grade a sample.

Every config error names its field the way a client wrote it (`testing_criteria[1].operation`).
`python` graders are refused: the service never executes user code.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from openai import AsyncOpenAI
from pydantic import ValidationError

from tunery_evaljudge.graders.base import GraderConfigError, GradeResult
from tunery_evaljudge.graders.classification import ClassificationGrader
from tunery_evaljudge.graders.item_check import ItemCheckGrader
from tunery_evaljudge.graders.json_checks import JsonSchemaGrader, JsonValidGrader
from tunery_evaljudge.graders.score_model import ScoreModelGrader
from tunery_evaljudge.graders.string_check import StringCheckGrader
from tunery_evaljudge.graders.text_similarity import TextSimilarityGrader
from tunery_evaljudge.judge import SelfJudgingError, check_self_judging
from tunery_evaljudge.templates import Sample

AnyGrader = (
    StringCheckGrader
    | JsonValidGrader
    | JsonSchemaGrader
    | ClassificationGrader
    | TextSimilarityGrader
    | ScoreModelGrader
    | ItemCheckGrader
)
GRADERS: dict[str, type[AnyGrader]] = {
    "string_check": StringCheckGrader,
    "json_valid": JsonValidGrader,
    "json_schema": JsonSchemaGrader,
    "classification": ClassificationGrader,
    "text_similarity": TextSimilarityGrader,
    "score_model": ScoreModelGrader,
    "item_check": ItemCheckGrader,
}
_REFUSED = {
    "python": "python graders are refused: user code is never executed here; "
    "string_check, json_schema, classification, text_similarity or score_model cover most checks",
    "label_model": "label_model is not supported; use score_model, or classification on the answer",
    "multi": "multi graders are not supported; list each grader as its own testing criterion",
}


def _param(where: str, loc: tuple) -> str:
    return where + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "missing"
    return error["msg"].removeprefix("Value error, ")


def grader_from_dict(config: Any, where: str = "grader") -> AnyGrader:
    """The grader a testing criterion describes; GraderConfigError names the first bad field."""
    if not isinstance(config, Mapping):
        raise GraderConfigError("a grader is a JSON object", where)
    kind = config.get("type")
    if kind in _REFUSED:
        raise GraderConfigError(_REFUSED[kind], f"{where}.type")
    if kind not in GRADERS:
        what = "missing" if kind is None else f"unknown grader type {kind!r}"
        raise GraderConfigError(f"{what}; one of {', '.join(GRADERS)}", f"{where}.type")
    try:
        return GRADERS[kind].model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise GraderConfigError(_message(first), _param(where, first["loc"])) from None


def graders_from_testing_criteria(
    criteria: Any,
    models_under_test: Iterable[str] = (),
    allow_self_judging: bool = False,
    where: str = "testing_criteria",
) -> list[AnyGrader]:
    """Every grader of an eval's testing criteria, names distinct, no model judging itself."""
    if not isinstance(criteria, list) or not criteria:
        raise GraderConfigError("a non-empty list of graders", where)
    models_under_test = list(models_under_test)
    graders: list[AnyGrader] = []
    for index, config in enumerate(criteria):
        here = f"{where}[{index}]"
        grader = grader_from_dict(config, here)
        if any(other.name == grader.name for other in graders):
            raise GraderConfigError(f"another criterion is already named {grader.name!r}", f"{here}.name")
        if isinstance(grader, ScoreModelGrader):
            try:
                check_self_judging(grader.model, models_under_test, allow_self_judging)
            except SelfJudgingError as exc:
                raise GraderConfigError(str(exc), f"{here}.model") from None
        graders.append(grader)
    return graders


async def grade_sample(
    grader: AnyGrader, item: Mapping[str, Any], sample: Sample, judge_client: AsyncOpenAI | None = None
) -> GradeResult:
    """One sample graded by one grader; `judge_client` is the judge endpoint score_model graders use."""
    if sample.error is not None:  # the model gave no answer: nothing to grade, and a fail
        return grader.result(None, False, f"no answer to grade: {sample.error}")
    if isinstance(grader, ScoreModelGrader):
        if judge_client is None:
            raise ValueError(f"grader {grader.name!r} needs a judge endpoint")
        return await grader.grade(item, sample, judge_client)
    return grader.grade(item, sample)
