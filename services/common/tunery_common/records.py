"""Records kept in JetStream KV buckets (the source of truth), one pydantic model per entity."""

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, Field


def now() -> int:
    return int(time.time())


class FileRecord(BaseModel):
    id: str
    org: str
    bytes: int
    created_at: int = Field(default_factory=now)
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"

    @property
    def object_name(self) -> str:
        return f"files/{self.org}/{self.id}"


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


JobStatus = Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]
FINAL_STATUSES = {"succeeded", "failed", "cancelled"}


class LeasedRecord(BaseModel):
    """A record that workers run from a work queue, one at a time under a lease."""

    id: str
    org: str
    status: str
    finished_at: int | None = None
    error: JobError | None = None
    lease_owner: str | None = None
    lease_until: float | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class CheckpointRecord(BaseModel):
    """OpenAI's fine-tuning checkpoint object, plus where its full training state lives."""

    id: str  # ftckpt-...
    step_number: int
    epoch: int
    created_at: int = Field(default_factory=now)
    metrics: dict[str, float] = Field(default_factory=dict)
    fine_tuned_model_checkpoint: str  # `<fine-tuned model id>:ckpt-step-<N>`, servable
    # Object name of the full training state (adapter + optimizer + scheduler + RNG + data
    # position); only the newest checkpoint keeps one, older ones keep just their adapter.
    state_object: str | None = None


class JobRecord(LeasedRecord):
    model: str
    training_file: str
    validation_file: str | None = None
    status: JobStatus = "validating_files"
    fine_tuned_model: str | None = None
    created_at: int = Field(default_factory=now)
    trained_tokens: int | None = None
    seed: int = 0
    suffix: str | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any] = Field(default_factory=dict)
    estimated_finish: int | None = None
    result_files: list[str] = Field(default_factory=list)
    checkpoints: list[CheckpointRecord] = Field(default_factory=list)  # oldest first
    # The job id at a managed provider, once created there: a redelivered job re-attaches to it.
    provider_job_id: str | None = None
    # The promotion gate (tunery_common.promotion.PromotionGate) its model must pass to be promoted.
    eval: dict[str, Any] | None = None


class ModelRecord(BaseModel):
    id: str
    org: str
    parent: str
    job_id: str
    created_at: int = Field(default_factory=now)
    status: Literal["ready", "deleted"] = "ready"
    adapter_object: str
    checkpoint_step: int | None = None  # set for `...:ckpt-step-<N>` models
    # Only a promoted model answers to its alias `ft:<base>:<org>:<suffix>`. A job with an eval
    # publishes its model "pending" until eval-judge has run that eval and decided.
    promotion: Literal["pending", "promoted", "rejected"] = "promoted"
    promotion_reason: str | None = None
    promoted_at: float | None = None
    eval_id: str | None = None
    eval_run_id: str | None = None
    baseline_run_id: str | None = None  # the run of `compare_to`, when the gate names one

    @property
    def key_id(self) -> str:
        return model_key_id(self.job_id, self.checkpoint_step)


def fine_tuned_model_id(base: str, org: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's shape: `ft:<base>:<org>:<suffix>:<job-id>` (empty suffix without one)."""
    return f"ft:{base}:{org}:{suffix or ''}:{job_id}"


def checkpoint_model_id(fine_tuned_model: str, step: int) -> str:
    """OpenAI's shape for a checkpoint: `<fine-tuned model id>:ckpt-step-<N>`."""
    return f"{fine_tuned_model}:ckpt-step-{step}"


_CKPT = re.compile(r"^ckpt-step-(\d+)$")
# Job ids become KV keys (`<org>.<id>`): anything else (dots, wildcards, spaces) names no job.
_JOB_ID = re.compile(r"^ftjob-[A-Za-z0-9_-]+$")


def parse_model_id(model_id: str) -> tuple[str, int | None] | None:
    """(job id, checkpoint step or None) of a fine-tuned model id, or None when it is not one."""
    parts = model_id.split(":")
    step = None
    if len(parts) >= 6 and (match := _CKPT.match(parts[-1])):
        step = int(match.group(1))
        parts = parts[:-1]
    if len(parts) < 5 or parts[0] != "ft" or not _JOB_ID.match(parts[-1]):
        return None
    return parts[-1], step


def job_id_of_model(model_id: str) -> str | None:
    """The job id inside a fine-tuned (or checkpoint) model id, or None when it is not one."""
    parsed = parse_model_id(model_id)
    return parsed[0] if parsed else None


def model_key_id(job_id: str, checkpoint_step: int | None = None) -> str:
    """The models-bucket id (KV key `<org>.<id>`) of a job's model or one of its checkpoints."""
    return job_id if checkpoint_step is None else f"{job_id}-ckpt-step-{checkpoint_step}"


class EvalRecord(BaseModel):
    """An eval (OpenAI's Evals API): what its items look like and how samples are graded."""

    id: str  # eval_...
    org: str
    name: str
    data_source_config: dict[str, Any]  # {"type": "custom", "item_schema": ..., "include_sample_schema": ...}
    testing_criteria: list[dict[str, Any]]  # grader configs, as the client wrote them
    metadata: dict[str, str] | None = None
    created_at: int = Field(default_factory=now)


EvalRunStatus = Literal["queued", "running", "completed", "failed", "canceled"]
EVAL_RUN_FINAL_STATUSES = {"completed", "failed", "canceled"}


class EvalRunRecord(LeasedRecord):
    """One run of an eval over a data source; per-item results live in the object store."""

    eval_id: str
    name: str
    status: EvalRunStatus = "queued"
    data_source: dict[str, Any]  # as the client sent it (file_content sources included)
    model: str | None = None  # the model under test of a completions run
    created_at: int = Field(default_factory=now)
    n_items: int = 0
    n_done: int = 0
    result_counts: dict[str, int] | None = None  # total, passed, failed, errored
    per_testing_criteria_results: list[dict[str, Any]] | None = None
    aggregates: dict[str, Any] | None = None  # per-criterion metrics, latency, tokens, judge
    metadata: dict[str, str] | None = None

    @property
    def is_final(self) -> bool:
        return self.status in EVAL_RUN_FINAL_STATUSES

    @property
    def output_items_object(self) -> str:
        return f"evals/{self.org}/{self.eval_id}/runs/{self.id}/output_items.json"
