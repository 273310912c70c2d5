"""Fine-tuning jobs, their events and checkpoints, and their translation to and from the trainer's
protos.

The trainer owns the meaning of `method` (types, hyperparameters): the gateway checks the shape
of the request and passes the method through as a Struct.
"""

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator
from tunery.events.v1 import events_pb2
from tunery.trainer.v1 import trainer_pb2

from tunery_gateway.schemas.base import INT64_MAX, ListObject, RequestModel
from tunery_gateway.structs import from_struct, to_struct

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
HYPERPARAMETER_NAMES = ("n_epochs", "batch_size", "learning_rate_multiplier")


class FineTuningJobCreate(RequestModel):
    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]*$")
    seed: int | None = Field(None, ge=0, le=INT64_MAX)
    metadata: dict[MetadataKey, MetadataValue] | None = Field(None, max_length=16)
    method: dict[str, Any] | None = None
    # Deprecated by OpenAI in favour of method.supervised.hyperparameters, still sent by old clients.
    hyperparameters: dict[str, Any] | None = None
    integrations: list[Any] | None = None
    # The promotion gate: checked by the trainer (and eval-judge for inline testing criteria).
    eval: dict[str, Any] | None = None

    @field_validator("hyperparameters")
    @classmethod
    def _not_with_method(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if value and info.data.get("method"):
            raise ValueError("give hyperparameters inside 'method' only, not both")
        return value

    @field_validator("integrations")
    @classmethod
    def _no_integrations(cls, value: list[Any] | None) -> list[Any] | None:
        if value:
            raise ValueError("integrations are not supported yet")
        return value

    def _method(self) -> dict[str, Any] | None:
        if self.method:
            return self.method
        hyperparameters = {k: v for k, v in (self.hyperparameters or {}).items() if v is not None}
        if hyperparameters:
            return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
        return None  # the trainer picks its default method

    def to_proto(self, org: str) -> trainer_pb2.CreateJobRequest:
        request = trainer_pb2.CreateJobRequest(
            org=org,
            model=self.model,
            training_file=self.training_file,
            validation_file=self.validation_file or "",
            suffix=self.suffix or "",
            metadata=self.metadata or {},
        )
        if self.seed is not None:
            request.seed = self.seed
        if self.eval is not None:
            request.eval_json = json.dumps(self.eval)
        method = self._method()
        if method:
            request.method.CopyFrom(to_struct(method))
        return request


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


# Values come from the trainer: "auto" until resolved, then numbers.
HyperparameterValue = int | float | str


class Hyperparameters(BaseModel):
    n_epochs: HyperparameterValue = "auto"
    batch_size: HyperparameterValue = "auto"
    learning_rate_multiplier: HyperparameterValue = "auto"


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    integrations: list[Any] = Field(default_factory=list)
    metadata: dict[str, str] | None
    method: dict[str, Any]
    estimated_finish: int | None
    user_provided_suffix: str | None
    eval: dict[str, Any] | None = None  # the promotion gate of the job's model

    @classmethod
    def from_proto(cls, job: trainer_pb2.Job) -> "FineTuningJob":
        # Proto3 scalars cannot be unset: empty strings and zeros mean "not yet" → null.
        method = from_struct(job.method) if job.HasField("method") else {}
        error = None
        if job.HasField("error") and (job.error.code or job.error.message):
            error = JobError(code=job.error.code, message=job.error.message, param=job.error.param or None)
        return cls(
            id=job.id,
            created_at=job.created_at,
            error=error,
            fine_tuned_model=job.fine_tuned_model or None,
            finished_at=job.finished_at or None,
            hyperparameters=_hyperparameters_of(method),
            model=job.model,
            organization_id=job.org,
            result_files=list(job.result_files),
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens or None,
            training_file=job.training_file,
            validation_file=job.validation_file or None,
            metadata=dict(job.metadata) or None,
            method=method,
            estimated_finish=job.estimated_finish or None,
            user_provided_suffix=job.suffix or None,
            eval=json.loads(job.eval_json) if job.eval_json else None,
        )


def _hyperparameters_of(method: dict[str, Any]) -> Hyperparameters:
    """The legacy top-level view: the hyperparameters of the method's own section."""
    section = method.get(method.get("type", "supervised"))
    values = section.get("hyperparameters") if isinstance(section, dict) else None
    if not isinstance(values, dict):
        return Hyperparameters()
    known = {name: values[name] for name in HYPERPARAMETER_NAMES if values.get(name) is not None}
    return Hyperparameters(**known)


class FineTuningJobList(ListObject[FineTuningJob]):
    pass


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] | None

    @classmethod
    def from_proto(cls, event: events_pb2.Event) -> "FineTuningJobEvent":
        return cls(
            id=event.id,
            created_at=event.created_at,
            level=event.level or "info",
            message=event.message,
            type=event.type or "message",
            data=from_struct(event.data) if event.HasField("data") else None,
        )


class FineTuningJobEventList(ListObject[FineTuningJobEvent]):
    pass


class CheckpointMetrics(BaseModel):
    """The figures measured at a checkpoint's step (null: not measured there)."""

    step: int | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int

    @classmethod
    def from_proto(cls, checkpoint: trainer_pb2.Checkpoint) -> "FineTuningJobCheckpoint":
        known = {k: v for k, v in checkpoint.metrics.items() if k in CheckpointMetrics.model_fields}
        if "step" in known:
            known["step"] = int(known["step"])
        return cls(
            id=checkpoint.id,
            created_at=checkpoint.created_at,
            fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
            fine_tuning_job_id=checkpoint.fine_tuning_job_id,
            metrics=CheckpointMetrics(**known),
            step_number=checkpoint.step_number,
        )


class FineTuningJobCheckpointList(ListObject[FineTuningJobCheckpoint]):
    first_id: str | None
    last_id: str | None
