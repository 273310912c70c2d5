"""`POST /v1/datasets/validate`: the request; the answer is data-prep's report, passed through.

data-prep owns the report's shape (`tunery data validate --json` prints the same object), so the
gateway checks the request and hands the report on without re-modelling it.
"""

from pydantic import Field
from tunery.dataprep.v1 import dataprep_pb2
from tunery_common.basemodels import DEFAULT_BASE_MODEL

from tunery_gateway.schemas.base import RequestModel

# File ids become KV keys: anything else (dots, wildcards) cannot name a file.
FILE_ID = r"^[A-Za-z0-9_-]{1,128}$"


class DatasetValidateRequest(RequestModel):
    file_id: str = Field(pattern=FILE_ID)
    validation_file_id: str | None = Field(None, pattern=FILE_ID)
    model: str = Field(DEFAULT_BASE_MODEL, min_length=1, max_length=128)
    # classification, extraction, format, summarization, tone, general; detected when absent.
    task: str | None = Field(None, min_length=1, max_length=64)

    def to_proto(self, org: str) -> dataprep_pb2.ValidateDatasetRequest:
        return dataprep_pb2.ValidateDatasetRequest(
            org=org,
            file_id=self.file_id,
            validation_file_id=self.validation_file_id or "",
            model=self.model,
            task=self.task or "",
        )
