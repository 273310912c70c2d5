"""The promotion gate of a fine-tuning job, and the alias its promoted models answer to.

A job's `eval` names an eval (or carries its testing criteria), the file to run it over (the job's
validation file by default) and minimum figures: `{criterion name: minimum pass rate}`,
`{"<criterion>.mean_score": minimum mean score}` or `{"pass_rate": minimum share of items that
pass every criterion}`. With `compare_to` ("base" or a model id) the new model must also not be
significantly worse than that model on any criterion. Only a model that passes is promoted, and
only promoted models take traffic through the alias `ft:<base>:<org>:<suffix>`.
"""

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunery_common.records import EvalRunRecord

OVERALL_PASS_RATE = "pass_rate"
CRITERION_METRICS = ("pass_rate", "mean_score")
# How each item of a chat file becomes a prompt when the gate says nothing: its messages without
# the final assistant one, which is the reference answer the model under test must not see.
DEFAULT_INPUT_MESSAGES = {
    "type": "item_reference",
    "item_reference": "item.messages",
    "drop_final_assistant": True,
}


class GateError(ValueError):
    def __init__(self, message: str, param: str):
        super().__init__(f"{param}: {message}")
        self.message = message
        self.param = param


class PromotionGate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eval_id: str | None = None
    testing_criteria: list[dict[str, Any]] | None = None  # turned into an eval when the job is created
    file_id: str | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)
    compare_to: str | None = None
    input_messages: dict[str, Any] | None = None  # as in a completions run's data source
    sampling_params: dict[str, Any] | None = None

    def data_source(self, model: str, file_id: str) -> dict[str, Any]:
        """The completions data source of a run of `model` over the gate's file."""
        source: dict[str, Any] = {
            "type": "completions",
            "model": model,
            "source": {"type": "file_id", "id": file_id},
            "input_messages": self.input_messages or DEFAULT_INPUT_MESSAGES,
        }
        if self.sampling_params:
            source["sampling_params"] = self.sampling_params
        return source


def parse_gate(value: Any) -> PromotionGate:
    """The gate's shape checked; errors name the field as `eval.<field>`."""
    try:
        gate = PromotionGate.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise GateError(error["msg"], f"eval.{where}" if where else "eval") from None
    if (gate.eval_id is None) == (gate.testing_criteria is None):
        raise GateError("give either eval_id or testing_criteria", "eval.eval_id")
    if not gate.thresholds and gate.compare_to is None:
        raise GateError("give thresholds, compare_to, or both", "eval.thresholds")
    if gate.compare_to is not None and not gate.compare_to:
        raise GateError("'base' or a model id", "eval.compare_to")
    return gate


def _metric_of(key: str, criteria: set[str]) -> tuple[str | None, str]:
    """(criterion or None for the whole run, metric) that a threshold key names."""
    if key in criteria:
        return key, "pass_rate"
    if key == OVERALL_PASS_RATE:
        return None, "pass_rate"
    name, _, metric = key.rpartition(".")
    if name in criteria and metric in CRITERION_METRICS:
        return name, metric
    raise KeyError(key)


def check_thresholds(gate: PromotionGate, criterion_names: Iterable[str]) -> None:
    criteria = set(criterion_names)
    for key, minimum in gate.thresholds.items():
        try:
            _, metric = _metric_of(key, criteria)
        except KeyError:
            names = ", ".join(sorted(criteria)) or "none"
            raise GateError(
                f"{key!r} is neither a testing criterion of the eval ({names}), "
                f"'<criterion>.pass_rate', '<criterion>.mean_score' nor 'pass_rate'",
                f"eval.thresholds.{key}",
            ) from None
        if metric == "pass_rate" and not 0 <= minimum <= 1:
            raise GateError("a pass rate between 0 and 1", f"eval.thresholds.{key}")


def measured(run: EvalRunRecord, key: str) -> float | None:
    """The figure of a completed run that a threshold key names (None when it has none)."""
    criteria = (run.aggregates or {}).get("criteria", {})
    criterion, metric = _metric_of(key, set(criteria))
    if criterion is None:
        counts = run.result_counts or {}
        return counts.get("passed", 0) / counts["total"] if counts.get("total") else None
    return criteria[criterion].get(metric)


def failed_thresholds(gate: PromotionGate, run: EvalRunRecord) -> list[dict[str, Any]]:
    """Each threshold the run misses, with the figure it reached (None: no figure, a miss too)."""
    failed = []
    for key, minimum in gate.thresholds.items():
        try:
            value = measured(run, key)
        except KeyError:
            value = None
        if value is None or value < minimum:
            failed.append({"threshold": key, "minimum": minimum, "value": value})
    return failed


def model_alias(model_id: str) -> str | None:
    """`ft:<base>:<org>:<suffix>` of `ft:<base>:<org>:<suffix>:<job>`; None without a suffix."""
    parts = model_id.split(":")
    if len(parts) != 5 or parts[0] != "ft" or not parts[3]:
        return None
    return ":".join(parts[:4])


def is_alias(model_id: str) -> bool:
    parts = model_id.split(":")
    return len(parts) == 4 and parts[0] == "ft" and all(parts[1:])
