"""`/v1/models`: base models and fine-tuned adapters, as the inference service knows them."""

import grpc
from fastapi import APIRouter
from tunery.inference.v1 import inference_pb2

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import InferenceDep, SettingsDep
from tunery_gateway.errors import model_error
from tunery_gateway.schemas.models import Model, ModelList

router = APIRouter(tags=["models"])


@router.get("/models")
async def list_models(org: Org, inference: InferenceDep, settings: SettingsDep) -> ModelList:
    request = inference_pb2.ListModelsRequest(org=org)
    reply = await inference.ListModels(request, timeout=settings.rpc_timeout_s)
    return ModelList(data=[Model.from_proto(model) for model in reply.models])


# `:path` because fine-tuned model ids hold colons (and a base id could hold a slash).
@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, org: Org, inference: InferenceDep, settings: SettingsDep) -> Model:
    try:
        model = await inference.GetModel(
            inference_pb2.GetModelRequest(org=org, id=model_id), timeout=settings.rpc_timeout_s
        )
    except grpc.aio.AioRpcError as exc:
        raise model_error(exc) from exc
    return Model.from_proto(model)
