"""Pieces shared by the resource schemas."""

from typing import Generic, Literal, TypeVar

from fastapi import Response
from pydantic import BaseModel, ConfigDict

T = TypeVar("T")

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def json_response(model: BaseModel) -> Response:
    """The model as JSON, without FastAPI validating it again against the route's response_model
    (the hot completion routes build it from the service's reply just before)."""
    return Response(model.model_dump_json(), media_type="application/json")


class RequestModel(BaseModel):
    """A request body: an unknown field is an error naming it, as OpenAI does."""

    model_config = ConfigDict(extra="forbid")


class ListObject(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
