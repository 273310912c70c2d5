"""The quick-eval control plane: create, read and list quick evals and their events.

Creating one checks everything a client can get wrong up front (the file, the model, the file's
format through data-prep), so that a bad request is a 400/404 and not a failed job; then the eval
is a KV record plus a message on the eval work queue, where any eval-judge worker picks it up.
"""

import logging

import grpc
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery.evaljudge.v1 import evaljudge_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.bus import EVAL_SUBJECT, Bus, RecordStore, make_event
from tunery_common.grpc_errors import ServiceError, answer_or_abort, invalid, not_found
from tunery_common.ids import new_id
from tunery_common.pagination import paginate
from tunery_common.records import QuickEvalRecord, QuickEvalResult

from tunery_evaljudge.items import load_items
from tunery_evaljudge.results import load_results
from tunery_evaljudge.service import EvalJudgeService

log = logging.getLogger(__name__)


def result_to_proto(result: QuickEvalResult) -> evaljudge_pb2.QuickEvalResult:
    return evaljudge_pb2.QuickEvalResult(**result.model_dump(exclude={"error"}), error=result.error or "")


def quick_eval_to_proto(
    record: QuickEvalRecord, results: list[QuickEvalResult] | None = None
) -> evaljudge_pb2.QuickEval:
    msg = evaljudge_pb2.QuickEval(
        id=record.id,
        org=record.org,
        model=record.model,
        file_id=record.file_id,
        status=record.status,
        created_at=record.created_at,
        finished_at=record.finished_at or 0,
        n_items=record.n_items,
        n_done=record.n_done,
        results=[result_to_proto(r) for r in results or []],
    )
    # Optional fields: unset (null outside) rather than 0 when there is no value yet.
    for name in ("exact_match_rate", "json_valid_rate", "max_items", "max_tokens"):
        if (value := getattr(record, name)) is not None:
            setattr(msg, name, value)
    if record.error:
        msg.error.CopyFrom(
            evaljudge_pb2.QuickEvalError(
                code=record.error.code, message=record.error.message, param=record.error.param or ""
            )
        )
    return msg


def upstream_error(service: str, exc: grpc.aio.AioRpcError) -> ServiceError:
    """A failed call to another service that is not the client's fault."""
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ServiceError(grpc.StatusCode.UNAVAILABLE, f"{service} unavailable, retry")
    return ServiceError(exc.code(), f"{service}: {exc.details()}")


class QuickEvalControl(EvalJudgeService):
    """The EvalJudge servicer: the graders (inherited) and the quick-eval control plane."""

    def __init__(
        self,
        bus: Bus,
        inference: inference_pb2_grpc.InferenceStub,
        dataprep: dataprep_pb2_grpc.DataPrepStub,
        timeout_s: float = 120,
    ):
        self.bus = bus
        self.inference = inference
        self.dataprep = dataprep
        self.timeout_s = timeout_s

    # gRPC methods: domain errors become statuses the gateway maps to HTTP codes.
    async def CreateQuickEval(self, request, context):
        return await answer_or_abort(context, self._create, request)

    async def GetQuickEval(self, request, context):
        return await answer_or_abort(context, self._get, request)

    async def ListQuickEvals(self, request, context):
        return await answer_or_abort(context, self._list, request)

    async def ListQuickEvalEvents(self, request, context):
        return await answer_or_abort(context, self._events, request)

    async def _create(self, request) -> evaljudge_pb2.QuickEval:
        for name in ("max_items", "max_tokens"):
            if request.HasField(name) and getattr(request, name) < 1:
                raise invalid(f"{name} must be at least 1", name)
        file = await self.bus.files.get(request.org, request.file_id)
        if file is None:
            raise not_found(f"no file {request.file_id!r}", "file_id")
        base_model = await self._base_model(request.org, request.model)
        await self._check_format(request.org, request.file_id, base_model)
        max_items = request.max_items if request.HasField("max_items") else None
        loaded = load_items(await self._file_bytes(file), max_items)
        if not loaded.items:
            where = f"line {loaded.skipped_lines[0]}: " if loaded.skipped_lines else ""
            raise invalid(
                f"{where}no example ends with an assistant message to compare the model's answer with",
                "file_id",
                "invalid_file",
            )
        record = QuickEvalRecord(
            id=new_id("qeval"),
            org=request.org,
            model=request.model,
            file_id=request.file_id,
            n_items=len(loaded.items),
            max_items=max_items,
            max_tokens=request.max_tokens if request.HasField("max_tokens") else None,
        )
        await self.bus.evals.create(record.org, record.id, record)
        await self.bus.publish_event(
            make_event(
                "eval",
                record.id,
                record.org,
                "created",
                f"Created quick eval {record.id}: {record.n_items} examples of {record.file_id} "
                f"on {record.model}",
            )
        )
        # The message names the record by its key; Nats-Msg-Id de-duplicates a retried publish.
        await self.bus.js.publish(
            EVAL_SUBJECT, RecordStore.key(record.org, record.id).encode(), headers={"Nats-Msg-Id": record.id}
        )
        return quick_eval_to_proto(record)

    async def _base_model(self, org: str, model: str) -> str:
        """The base model of `model` as inference knows it for this org (itself for a base model)."""
        try:
            found = await self.inference.GetModel(
                inference_pb2.GetModelRequest(org=org, id=model), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise ServiceError(
                    grpc.StatusCode.NOT_FOUND, exc.details(), "model", "model_not_found"
                ) from None
            raise upstream_error("inference", exc) from None
        return found.parent or found.id

    async def _check_format(self, org: str, file_id: str, base_model: str) -> None:
        """data-prep owns the chat format: the first of its errors, with its line, is the answer."""
        request = dataprep_pb2.ValidateFileRequest(org=org, file_id=file_id, model=base_model)
        try:
            report = await self.dataprep.ValidateFile(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"no file {file_id!r}", "file_id") from None
            raise upstream_error("data-prep", exc) from None
        if report.n_errors:
            more = f" (and {report.n_errors - 1} more errors)" if report.n_errors > 1 else ""
            raise invalid(f"{report.errors[0].message}{more}", "file_id", "invalid_file")

    async def _file_bytes(self, file) -> bytes:
        try:
            return await self.bus.get_object(file.object_name)
        except FileNotFoundError:
            raise ServiceError(grpc.StatusCode.DATA_LOSS, f"the content of {file.id} is missing") from None

    async def _record(self, org: str, eval_id: str) -> QuickEvalRecord:
        record = await self.bus.evals.get(org, eval_id)
        if record is None:
            raise not_found(f"no quick eval {eval_id!r}", "quick_eval_id")
        return record

    async def _get(self, request) -> evaljudge_pb2.QuickEval:
        record = await self._record(request.org, request.id)
        if record.status != "succeeded":
            return quick_eval_to_proto(record)
        try:
            results = await load_results(self.bus, record)
        except FileNotFoundError:
            raise ServiceError(grpc.StatusCode.DATA_LOSS, f"the results of {record.id} are missing") from None
        return quick_eval_to_proto(record, results)

    async def _list(self, request) -> evaljudge_pb2.ListQuickEvalsResponse:
        records, has_more = paginate(
            await self.bus.evals.list(request.org), request.page.after, request.page.limit
        )
        return evaljudge_pb2.ListQuickEvalsResponse(
            quick_evals=[quick_eval_to_proto(r) for r in records], has_more=has_more
        )

    async def _events(self, request) -> evaljudge_pb2.ListQuickEvalEventsResponse:
        await self._record(request.org, request.id)
        events = list(reversed(await self.bus.read_events("eval", request.id)))
        page, has_more = paginate(events, request.page.after, request.page.limit)
        return evaljudge_pb2.ListQuickEvalEventsResponse(events=page, has_more=has_more)
