"""`/v1/cost/estimate`: training cost per backend and monthly inference cost, from data-prep."""

from fastapi import APIRouter
from fastapi.responses import Response

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import DataPrepDep, SettingsDep
from tunery_gateway.schemas.cost import CostEstimateRequest

router = APIRouter(tags=["cost"])

_ESTIMATE = {
    200: {
        "description": "model, n_examples, billing_tokens, n_epochs, trained_tokens, training (per backend: "
        "trained_tokens, usd, gpu_hours where self-hosted) and inference_monthly (base vs fine-tuned).",
        "content": {"application/json": {}},
    }
}


@router.post("/cost/estimate", response_class=Response, responses=_ESTIMATE)
async def estimate_cost(
    body: CostEstimateRequest, org: Org, dataprep: DataPrepDep, settings: SettingsDep
) -> Response:
    reply = await dataprep.EstimateCost(body.to_proto(org), timeout=settings.request_timeout_s)
    return Response(reply.json, media_type="application/json")
