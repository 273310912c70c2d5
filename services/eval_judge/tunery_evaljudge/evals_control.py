"""The Evals control plane (OpenAI's Evals API): evals, their runs, output items, comparisons, reports.

Creating an eval checks its testing criteria; creating a run checks its data source (every item
against the eval's item schema, the model under test with inference) and keeps the items in the
object store, so that a bad request is a 400/404 and not a failed run. The run is then a KV record
plus a message on the eval-run work queue.
"""

import json
from collections.abc import Sequence
from typing import Any

import grpc
from openai import AsyncOpenAI
from tunery.evaljudge.v1 import evaljudge_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.bus import EVAL_RUN_SUBJECT, Bus, RecordStore, make_event
from tunery_common.grpc_errors import ServiceError, answer_or_abort, conflict, invalid, not_found
from tunery_common.ids import new_id
from tunery_common.pagination import paginate
from tunery_common.records import EvalRecord, EvalRunRecord

from tunery_evaljudge.eval_compare import compare_runs
from tunery_evaljudge.eval_data import DataSourceError, check_data_source, check_item_schema, load_run_items
from tunery_evaljudge.eval_report import render_report
from tunery_evaljudge.eval_store import load_outputs, save_items
from tunery_evaljudge.graders.base import GraderConfigError
from tunery_evaljudge.graders.criteria import graders_from_testing_criteria
from tunery_evaljudge.judge import Judge, JudgeUnavailable
from tunery_evaljudge.service import EvalJudgeService

MAX_NAME = 256


def _json(text: str, param: str, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        raise invalid("not valid JSON", param) from None


def _metadata(text: str) -> dict[str, str] | None:
    metadata = _json(text, "metadata", None)
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise invalid("an object of strings", "metadata")
    return metadata


def document(record_id: str, value: Any) -> evaljudge_pb2.EvalDocument:
    text = value.model_dump_json() if hasattr(value, "model_dump_json") else json.dumps(value)
    return evaljudge_pb2.EvalDocument(id=record_id, json=text)


def _ordered(records: Sequence, order: str) -> list:
    """Stores list newest first; "asc" is oldest first."""
    return list(reversed(records)) if order == "asc" else list(records)


def upstream_error(service: str, exc: grpc.aio.AioRpcError) -> ServiceError:
    """A failed call to another service that is not the client's fault."""
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ServiceError(grpc.StatusCode.UNAVAILABLE, f"{service} unavailable, retry")
    return ServiceError(exc.code(), f"{service}: {exc.details()}")


class EvalsControl(EvalJudgeService):
    """The EvalJudge servicer: the graders (inherited) and evals."""

    def __init__(
        self,
        bus: Bus,
        inference: inference_pb2_grpc.InferenceStub,
        timeout_s: float = 120,
        judge: AsyncOpenAI | None = None,
        judge_model: str = "smollm2-135m-instruct",
    ):
        self.bus = bus
        self.inference = inference
        self.timeout_s = timeout_s
        self.judge = judge
        self.judge_model = judge_model

    async def CreateEval(self, request, context):
        return await answer_or_abort(context, self._create_eval, request)

    async def GetEval(self, request, context):
        return await answer_or_abort(context, self._get_eval_document, request)

    async def ListEvals(self, request, context):
        return await answer_or_abort(context, self._list_evals, request)

    async def DeleteEval(self, request, context):
        return await answer_or_abort(context, self._delete_eval, request)

    async def CreateEvalRun(self, request, context):
        return await answer_or_abort(context, self._create_run, request)

    async def GetEvalRun(self, request, context):
        return await answer_or_abort(context, self._get_run_document, request)

    async def ListEvalRuns(self, request, context):
        return await answer_or_abort(context, self._list_runs, request)

    async def CancelEvalRun(self, request, context):
        return await answer_or_abort(context, self._cancel_run, request)

    async def ListEvalRunOutputItems(self, request, context):
        return await answer_or_abort(context, self._output_items, request)

    async def CompareEvalRuns(self, request, context):
        return await answer_or_abort(context, self._compare, request)

    async def GetEvalRunReport(self, request, context):
        return await answer_or_abort(context, self._report, request)

    # Evals
    async def _create_eval(self, request) -> evaljudge_pb2.EvalDocument:
        if len(request.name) > MAX_NAME:
            raise invalid(f"at most {MAX_NAME} characters", "name")
        config = _json(request.data_source_config_json, "data_source_config", None)
        criteria = _json(request.testing_criteria_json, "testing_criteria", None)
        try:
            check_item_schema(config)
            graders_from_testing_criteria(criteria)
        except (DataSourceError, GraderConfigError) as exc:
            raise invalid(exc.message, exc.param) from None
        record = EvalRecord(
            id=new_id("eval"),
            org=request.org,
            name=request.name,
            data_source_config=config,
            testing_criteria=criteria,
            metadata=_metadata(request.metadata_json),
        )
        await self.bus.eval_defs.create(record.org, record.id, record)
        return document(record.id, record)

    async def _eval(self, org: str, eval_id: str) -> EvalRecord:
        record = await self.bus.eval_defs.get(org, eval_id)
        if record is None:
            raise not_found(f"no eval {eval_id!r}", "eval_id")
        return record

    async def _get_eval_document(self, request) -> evaljudge_pb2.EvalDocument:
        return document(request.eval_id, await self._eval(request.org, request.eval_id))

    async def _list_evals(self, request) -> evaljudge_pb2.EvalDocumentList:
        records = _ordered(await self.bus.eval_defs.list(request.org), request.order)
        page, has_more = paginate(records, request.page.after, request.page.limit)
        return evaljudge_pb2.EvalDocumentList(data=[document(r.id, r) for r in page], has_more=has_more)

    async def _delete_eval(self, request) -> evaljudge_pb2.EvalDocument:
        record = await self._eval(request.org, request.eval_id)
        for run in await self._runs_of(record):
            await self._cancel(run)
        await self.bus.eval_defs.delete(record.org, record.id)
        return document(record.id, record)

    # Runs
    async def _create_run(self, request, run_id: str | None = None) -> evaljudge_pb2.EvalDocument:
        eval_record = await self._eval(request.org, request.eval_id)
        data_source = _json(request.data_source_json, "data_source", None)
        try:
            kind = check_data_source(data_source)
        except DataSourceError as exc:
            raise invalid(exc.message, exc.param) from None
        model = data_source.get("model") if kind == "completions" else None
        try:
            graders_from_testing_criteria(eval_record.testing_criteria, [model] if model else [])
        except GraderConfigError as exc:
            raise invalid(exc.message, exc.param) from None
        if model is not None:
            try:
                await self._base_model(request.org, model)
            except ServiceError as exc:
                exc.param = "data_source.model" if exc.param == "model" else exc.param
                raise
        file_bytes = await self._source_file(request.org, data_source.get("source"))
        item_schema = check_item_schema(eval_record.data_source_config)
        try:
            items = load_run_items(data_source, item_schema, file_bytes)
        except DataSourceError as exc:
            raise invalid(exc.message, exc.param) from None
        # The items live in the object store; the record keeps the source without its content.
        kept_source = dict(data_source)
        if isinstance(kept_source.get("source"), dict) and "content" in kept_source["source"]:
            kept_source["source"] = {"type": "file_content", "n_items": len(items)}
        run = EvalRunRecord(
            id=run_id or new_id("evalrun"),
            org=request.org,
            eval_id=eval_record.id,
            name=request.name or f"{eval_record.name} run",
            data_source=kept_source,
            model=model,
            n_items=len(items),
            metadata=_metadata(request.metadata_json),
        )
        await save_items(self.bus, run, items)
        await self.bus.eval_runs.create(run.org, run.id, run)
        await self.bus.publish_event(
            make_event(
                "evalrun", run.id, run.org, "created", f"Created eval run {run.id}: {len(items)} items"
            )
        )
        await self.bus.js.publish(
            EVAL_RUN_SUBJECT, RecordStore.key(run.org, run.id).encode(), headers={"Nats-Msg-Id": run.id}
        )
        return document(run.id, run)

    async def _source_file(self, org: str, source: Any) -> bytes | None:
        if not isinstance(source, dict) or source.get("type") != "file_id":
            return None
        file_id = source.get("id")
        file = await self.bus.files.get(org, file_id) if isinstance(file_id, str) and file_id else None
        if file is None:
            raise not_found(f"no file {file_id!r}", "data_source.source.id")
        return await self._file_bytes(file)

    async def _file_bytes(self, file) -> bytes:
        try:
            return await self.bus.get_object(file.object_name)
        except FileNotFoundError:
            raise ServiceError(grpc.StatusCode.DATA_LOSS, f"the content of {file.id} is missing") from None

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

    async def _run(self, org: str, eval_id: str, run_id: str, param: str = "run_id") -> EvalRunRecord:
        await self._eval(org, eval_id)
        run = await self.bus.eval_runs.get(org, run_id)
        if run is None or run.eval_id != eval_id:
            raise not_found(f"no run {run_id!r} of eval {eval_id!r}", param)
        return run

    async def _runs_of(self, eval_record: EvalRecord) -> list[EvalRunRecord]:
        return [r for r in await self.bus.eval_runs.list(eval_record.org) if r.eval_id == eval_record.id]

    async def _get_run_document(self, request) -> evaljudge_pb2.EvalDocument:
        return document(request.run_id, await self._run(request.org, request.eval_id, request.run_id))

    async def _list_runs(self, request) -> evaljudge_pb2.EvalDocumentList:
        runs = await self._runs_of(await self._eval(request.org, request.eval_id))
        if request.status:
            wanted = "running" if request.status == "in_progress" else request.status
            runs = [r for r in runs if r.status == wanted]
        page, has_more = paginate(_ordered(runs, request.order), request.page.after, request.page.limit)
        return evaljudge_pb2.EvalDocumentList(data=[document(r.id, r) for r in page], has_more=has_more)

    async def _cancel(self, run: EvalRunRecord) -> EvalRunRecord:
        def apply(rec: EvalRunRecord):
            if rec.is_final:
                return None
            return rec.model_copy(update={"status": "canceled", "lease_owner": None, "lease_until": None})

        return await self.bus.eval_runs.mutate(run.org, run.id, apply) or run

    async def _cancel_run(self, request) -> evaljudge_pb2.EvalDocument:
        run = await self._run(request.org, request.eval_id, request.run_id)
        if run.status in ("completed", "failed"):
            raise conflict(f"run {run.id} already {run.status}", "run_id")
        return document(run.id, await self._cancel(run))

    async def _completed_outputs(self, run: EvalRunRecord, param: str = "run_id") -> list[dict]:
        if run.status != "completed":
            raise conflict(f"run {run.id} is {run.status}, not completed", param)
        try:
            return await load_outputs(self.bus, run)
        except FileNotFoundError:
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS, f"the output items of {run.id} are missing"
            ) from None

    async def _output_items(self, request) -> evaljudge_pb2.EvalDocumentList:
        run = await self._run(request.org, request.eval_id, request.run_id)
        outputs = await self._completed_outputs(run)
        if request.status:
            if request.status not in ("pass", "fail", "error"):
                raise invalid("pass, fail or error", "status")
            outputs = [o for o in outputs if o["status"] == request.status]
        ordered = list(reversed(outputs)) if request.order == "desc" else outputs
        page, has_more = paginate(ordered, request.page.after, request.page.limit, lambda o: o["id"])
        return evaljudge_pb2.EvalDocumentList(data=[document(o["id"], o) for o in page], has_more=has_more)

    # Comparison and report
    async def _compare(self, request) -> evaljudge_pb2.EvalDocument:
        eval_record = await self._eval(request.org, request.eval_id)
        comparison = await self._comparison(
            eval_record, request.baseline_run_id, request.candidate_run_id, request.pairwise
        )
        return document(f"{request.baseline_run_id}:{request.candidate_run_id}", comparison)

    async def _comparison(self, eval_record: EvalRecord, baseline_id: str, candidate_id: str, pairwise: bool):
        runs = []
        for run_id in (baseline_id, candidate_id):
            run = await self._run(eval_record.org, eval_record.id, run_id, param="runs")
            runs.append((run, await self._completed_outputs(run, "runs")))
        graders = graders_from_testing_criteria(eval_record.testing_criteria, allow_self_judging=True)
        judge = None
        if pairwise:
            if self.judge is None:
                raise invalid("no judge endpoint is configured", "judge")
            judge = Judge(self.judge, self.judge_model)
        try:
            return await compare_runs(graders, runs[0], runs[1], judge)
        except ValueError as exc:
            raise invalid(str(exc), "runs") from None
        except JudgeUnavailable as exc:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None

    async def _report(self, request) -> evaljudge_pb2.EvalRunReport:
        eval_record = await self._eval(request.org, request.eval_id)
        run = await self._run(request.org, request.eval_id, request.run_id)
        comparison = None
        if request.compare_with_run_id:
            comparison = await self._comparison(eval_record, request.compare_with_run_id, run.id, False)
        return evaljudge_pb2.EvalRunReport(html=render_report(eval_record, run, comparison))
