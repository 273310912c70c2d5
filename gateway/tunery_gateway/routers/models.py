"""`/v1/models`: base models and fine-tuned adapters, as the inference service knows them, and
the download of a fine-tuned model's (or checkpoint's) adapter.

The model registry and the adapters live on the bus, so the download reads them directly
rather than through a service.
"""

import asyncio
import tempfile

import grpc
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from tunery.inference.v1 import inference_pb2
from tunery_common.adapters import (
    EXPORT_MEDIA_TYPE,
    IncompleteAdapterError,
    export_filename,
    write_export_archive,
)
from tunery_common.basemodels import CATALOG
from tunery_common.bus import Bus, make_event
from tunery_common.records import ModelRecord, model_key_id, parse_model_id

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import BusDep, InferenceDep, SettingsDep
from tunery_gateway.errors import OpenAIError, model_error, raise_openai_error
from tunery_gateway.schemas.models import Model, ModelDeleted, ModelList
from tunery_gateway.spool import stream_spooled

router = APIRouter(tags=["models"])
PROMOTION_FIELDS = {"promotion", "promotion_reason", "eval_id", "eval_run_id"}


@router.get("/models")
async def list_models(org: Org, inference: InferenceDep, settings: SettingsDep) -> ModelList:
    request = inference_pb2.ListModelsRequest(org=org)
    reply = await inference.ListModels(request, timeout=settings.rpc_timeout_s)
    return ModelList(data=[Model.from_proto(model) for model in reply.models])


def _not_found(model_id: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model {model_id!r} does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


async def _fine_tuned_model(bus: Bus, org: str, model_id: str) -> ModelRecord:
    if model_id in CATALOG:
        raise_openai_error(
            400,
            f"{model_id!r} is a base model: only fine-tuned models and their checkpoints can be downloaded.",
            param="model",
        )
    parsed = parse_model_id(model_id)
    # Another org's model answers exactly like an unknown one: the KV is keyed by org.
    record = await bus.models.get(org, model_key_id(*parsed)) if parsed else None
    if record is None or record.id != model_id or record.status != "ready":
        raise _not_found(model_id)
    return record


# Declared before `/models/{model_id:path}`, which would otherwise capture `.../content` too.
@router.get("/models/{model_id:path}/content", response_class=StreamingResponse)
async def retrieve_model_content(model_id: str, org: Org, bus: BusDep) -> StreamingResponse:
    """The adapter as a .tar.gz of a PEFT folder (adapter_config.json + adapter_model.safetensors)."""
    record = await _fine_tuned_model(bus, org, model_id)
    no_adapter = OpenAIError(
        404, f"The model {model_id!r} has no downloadable adapter.", param="model", code="model_not_found"
    )
    if not record.adapter_object:  # e.g. trained at a managed provider, which keeps the weights
        raise no_adapter
    # Spooled to disk rather than memory: adapters of large models reach hundreds of MB.
    stored, archive = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    try:
        try:
            await bus.get_object(record.adapter_object, writeinto=stored)
        except FileNotFoundError:
            raise no_adapter from None
        stored.seek(0)
        await asyncio.to_thread(write_export_archive, stored, record.parent, archive)
    except IncompleteAdapterError as exc:
        archive.close()
        raise OpenAIError(500, f"The adapter of {model_id} cannot be exported: {exc}.") from None
    except BaseException:
        archive.close()
        raise
    finally:
        stored.close()
    return StreamingResponse(
        stream_spooled(archive),
        media_type=EXPORT_MEDIA_TYPE,
        headers={
            "Content-Length": str(archive.tell()),
            "Content-Disposition": f'attachment; filename="{export_filename(model_id)}"',
        },
    )


# `:path` because fine-tuned model ids hold colons (and a base id could hold a slash).
@router.get("/models/{model_id:path}")
async def retrieve_model(
    model_id: str, org: Org, inference: InferenceDep, bus: BusDep, settings: SettingsDep
) -> Model:
    try:
        model = await inference.GetModel(
            inference_pb2.GetModelRequest(org=org, id=model_id), timeout=settings.rpc_timeout_s
        )
    except grpc.aio.AioRpcError as exc:
        raise model_error(exc) from exc
    answer = Model.from_proto(model)
    # An alias answers with the model it resolves to; the promotion lives in the registry record.
    parsed = parse_model_id(answer.id)
    record = await bus.models.get(org, model_key_id(*parsed)) if parsed else None
    if record is not None and record.id == answer.id and record.checkpoint_step is None:
        answer = answer.model_copy(update=record.model_dump(include=PROMOTION_FIELDS))
    return answer


@router.delete("/models/{model_id:path}")
async def delete_model(model_id: str, org: Org, bus: BusDep) -> ModelDeleted:
    """Deletes a fine-tuned model or checkpoint of the org: its record is marked deleted (kept, so
    that the id is never served again), which every inference replica's registry watch sees and
    unloads; then its adapter goes. The registry is a bus record, so no service is involved."""
    if model_id in CATALOG:
        raise_openai_error(400, f"{model_id!r} is a base model: it cannot be deleted.", param="model")
    parsed = parse_model_id(model_id)
    marked: list[ModelRecord] = []  # the record this call marked deleted, if any

    def mark_deleted(record: ModelRecord) -> ModelRecord | None:
        marked.clear()  # compare-and-set retries call this again
        if record.id != model_id or record.status != "ready":
            return None
        marked.append(record.model_copy(update={"status": "deleted"}))
        return marked[0]

    # Of two concurrent deletions one marks the record, the other finds it deleted (404).
    if parsed:
        await bus.models.mutate(org, model_key_id(*parsed), mark_deleted)
    if not marked:
        raise _not_found(model_id)
    record = marked[0]
    if record.adapter_object:
        await bus.delete_object(record.adapter_object)
    await bus.publish_event(make_event("model", record.key_id, org, "deleted", f"Deleted {model_id}"))
    return ModelDeleted(id=model_id, deleted=True)
