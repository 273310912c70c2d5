"""`POST /v1/cost/estimate`: the request; the answer is data-prep's estimate, passed through."""

from pydantic import Field
from tunery.dataprep.v1 import dataprep_pb2
from tunery_common.basemodels import DEFAULT_BASE_MODEL

from tunery_gateway.schemas.base import INT32_MAX, RequestModel
from tunery_gateway.schemas.datasets import FILE_ID


class CostEstimateRequest(RequestModel):
    # Either a file, or its size in numbers (data-prep says which is missing).
    file_id: str | None = Field(None, pattern=FILE_ID)
    n_examples: int | None = Field(None, gt=0, le=INT32_MAX)
    tokens_per_example: int | None = Field(None, gt=0, le=INT32_MAX)
    model: str = Field(DEFAULT_BASE_MODEL, min_length=1, max_length=128)
    n_epochs: int | None = Field(None, ge=1, le=50)
    # Traffic, for the monthly inference cost of a base model against fine-tuned ones.
    requests_per_day: int = Field(0, ge=0, le=INT32_MAX)
    input_tokens_per_request: int = Field(0, ge=0, le=INT32_MAX)
    output_tokens_per_request: int = Field(0, ge=0, le=INT32_MAX)

    def to_proto(self, org: str) -> dataprep_pb2.EstimateCostRequest:
        request = dataprep_pb2.EstimateCostRequest(
            org=org,
            file_id=self.file_id or "",
            n_examples=self.n_examples or 0,
            tokens_per_example=self.tokens_per_example or 0,
            model=self.model,
            requests_per_day=self.requests_per_day,
            input_tokens_per_request=self.input_tokens_per_request,
            output_tokens_per_request=self.output_tokens_per_request,
        )
        if self.n_epochs is not None:
            request.n_epochs = self.n_epochs
        return request
