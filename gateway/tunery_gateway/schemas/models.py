"""Models: base models and the fine-tuned adapters trained on them."""

from typing import Literal

from pydantic import BaseModel
from tunery.inference.v1 import inference_pb2


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    parent: str | None = None  # the base model of a fine-tuned one
    # Fine-tuned models, by id: whether the alias `ft:<base>:<org>:<suffix>` may serve it, and why.
    promotion: Literal["pending", "promoted", "rejected"] | None = None
    promotion_reason: str | None = None
    eval_id: str | None = None
    eval_run_id: str | None = None

    @classmethod
    def from_proto(cls, model: inference_pb2.Model) -> "Model":
        return cls(id=model.id, created=model.created, owned_by=model.owned_by, parent=model.parent or None)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool
