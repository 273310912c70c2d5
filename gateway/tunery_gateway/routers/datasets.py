"""`/v1/datasets/validate`: data-prep's dataset report of an uploaded file."""

from fastapi import APIRouter
from fastapi.responses import Response

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import DataPrepDep, SettingsDep
from tunery_gateway.schemas.datasets import DatasetValidateRequest

router = APIRouter(tags=["datasets"])

_REPORT = {
    200: {
        "description": "The dataset report: n_examples, format_errors, errors, n_errors, tokens, n_epochs, "
        "estimated_trained_tokens, cost_estimates, warnings, recommendations (and validation).",
        "content": {"application/json": {}},
    }
}


@router.post("/datasets/validate", response_class=Response, responses=_REPORT)
async def validate_dataset(
    body: DatasetValidateRequest, org: Org, dataprep: DataPrepDep, settings: SettingsDep
) -> Response:
    # The request timeout: a large file takes a while to read through.
    reply = await dataprep.ValidateDataset(body.to_proto(org), timeout=settings.request_timeout_s)
    return Response(reply.json, media_type="application/json")
