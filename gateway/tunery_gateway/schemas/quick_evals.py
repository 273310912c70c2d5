"""Quick evals (a file's examples run through a model and graded) and their translation to protos."""

from typing import Literal

from pydantic import BaseModel, Field
from tunery.evaljudge.v1 import evaljudge_pb2

from tunery_gateway.schemas.base import INT32_MAX, ListObject, RequestModel
from tunery_gateway.schemas.fine_tuning import FineTuningJobEvent, JobError

MAX_ITEMS = 10_000


class QuickEvalCreate(RequestModel):
    model: str = Field(min_length=1)
    file_id: str = Field(min_length=1)
    max_items: int | None = Field(None, ge=1, le=MAX_ITEMS)
    # None: each answer gets room derived from its reference's length.
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)

    def to_proto(self, org: str) -> evaljudge_pb2.CreateQuickEvalRequest:
        request = evaljudge_pb2.CreateQuickEvalRequest(org=org, model=self.model, file_id=self.file_id)
        if self.max_items is not None:
            request.max_items = self.max_items
        if self.max_tokens is not None:
            request.max_tokens = self.max_tokens
        return request


class QuickEvalResult(BaseModel):
    index: int
    line: int
    prompt: str
    expected: str
    output: str
    exact_match: bool
    json_valid: bool
    latency_ms: int
    error: str | None  # why the model gave no output for this item

    @classmethod
    def from_proto(cls, result: evaljudge_pb2.QuickEvalResult) -> "QuickEvalResult":
        return cls(
            index=result.index,
            line=result.line,
            prompt=result.prompt,
            expected=result.expected,
            output=result.output,
            exact_match=result.exact_match,
            json_valid=result.json_valid,
            latency_ms=result.latency_ms,
            error=result.error or None,
        )


class QuickEval(BaseModel):
    id: str
    object: Literal["quick_eval"] = "quick_eval"
    model: str
    file_id: str
    status: str
    created_at: int
    finished_at: int | None
    n_items: int
    n_done: int
    exact_match_rate: float | None
    json_valid_rate: float | None
    results: list[QuickEvalResult] | None  # once succeeded; lists leave them out
    error: JobError | None

    @classmethod
    def from_proto(cls, msg: evaljudge_pb2.QuickEval) -> "QuickEval":
        error = None
        if msg.HasField("error") and (msg.error.code or msg.error.message):
            error = JobError(code=msg.error.code, message=msg.error.message, param=msg.error.param or None)
        return cls(
            id=msg.id,
            model=msg.model,
            file_id=msg.file_id,
            status=msg.status,
            created_at=msg.created_at,
            finished_at=msg.finished_at or None,
            n_items=msg.n_items,
            n_done=msg.n_done,
            exact_match_rate=_optional(msg, "exact_match_rate"),
            json_valid_rate=_optional(msg, "json_valid_rate"),
            # eval-judge sends them with a succeeded eval it was asked for by id only.
            results=[QuickEvalResult.from_proto(r) for r in msg.results] or None,
            error=error,
        )


def _optional(message, name: str) -> float | None:
    return getattr(message, name) if message.HasField(name) else None


class QuickEvalList(ListObject[QuickEval]):
    pass


class QuickEvalEvent(FineTuningJobEvent):
    object: Literal["quick_eval.event"] = "quick_eval.event"


class QuickEvalEventList(ListObject[QuickEvalEvent]):
    pass
