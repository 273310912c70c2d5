"""The job control plane: create, validate, list, pause, resume, cancel jobs, read their events
and checkpoints.

Records live in the JetStream KV bucket; a created job is validated through data-prep, then put
on the train queue, where any worker picks it up. A paused job leaves the queue (its worker saves
a checkpoint and moves on); resuming puts it back, and a worker continues from that checkpoint.
"""

import asyncio
import json
import logging
import time
from pathlib import Path

import grpc
from google.protobuf import json_format
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunery_common.basemodels import CATALOG, DEFAULT_BASE_MODEL
from tunery_common.bus import TRAIN_SUBJECT, Bus, make_event
from tunery_common.grpc_errors import ServiceError, answer_or_abort, conflict, invalid, not_found
from tunery_common.ids import new_id
from tunery_common.pagination import paginate
from tunery_common.promotion import GateError, PromotionGate, check_thresholds, parse_gate
from tunery_common.records import (
    CheckpointRecord,
    JobError,
    JobRecord,
    model_key_id,
    now,
    parse_model_id,
)

from tunery_trainer.checkpoints import resume_point
from tunery_trainer.jobref import JobRef
from tunery_trainer.method import DATA_FORMATS, hyperparameters_of, method_type, parse_method
from tunery_trainer.providers import ProviderCatalog

log = logging.getLogger(__name__)

PAUSABLE = ("running", "queued")
# What each data format looks like, for the error that says a file has the wrong one.
FORMAT_SHAPES = {
    "chat": "a 'messages' list per line",
    "preference": "'input', 'preferred_output' and 'non_preferred_output' per line",
}


def whole_floats_to_int(value):
    """protobuf Struct turns every number into a float; give integers back their type."""
    if isinstance(value, dict):
        return {k: whole_floats_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_floats_to_int(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def job_to_proto(job: JobRecord) -> trainer_pb2.Job:
    msg = trainer_pb2.Job(
        id=job.id,
        org=job.org,
        model=job.model,
        training_file=job.training_file,
        validation_file=job.validation_file or "",
        status=job.status,
        fine_tuned_model=job.fine_tuned_model or "",
        created_at=job.created_at,
        finished_at=job.finished_at or 0,
        trained_tokens=job.trained_tokens or 0,
        seed=job.seed,
        suffix=job.suffix or "",
        metadata=job.metadata or {},
        estimated_finish=job.estimated_finish or 0,
        result_files=job.result_files,
        eval_json=json.dumps(job.eval) if job.eval else "",
    )
    msg.method.update(job.method)
    if job.error:
        msg.error.CopyFrom(
            trainer_pb2.JobError(code=job.error.code, message=job.error.message, param=job.error.param or "")
        )
    return msg


def checkpoint_to_proto(job_id: str, checkpoint: CheckpointRecord) -> trainer_pb2.Checkpoint:
    return trainer_pb2.Checkpoint(
        id=checkpoint.id,
        created_at=checkpoint.created_at,
        fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
        fine_tuning_job_id=job_id,
        step_number=checkpoint.step_number,
        epoch=checkpoint.epoch,
        metrics=checkpoint.metrics,
    )


class TrainerControl(trainer_pb2_grpc.TrainerServicer):
    def __init__(
        self,
        bus: Bus,
        dataprep: dataprep_pb2_grpc.DataPrepStub,
        validation_timeout_s: float = 120,
        model_cache: Path | None = None,
        max_lora_rank: int = 64,
        providers: ProviderCatalog | None = None,
    ):
        self.bus = bus
        self.dataprep = dataprep
        self.validation_timeout_s = validation_timeout_s
        self.model_cache = model_cache  # base models already built there are checked at create time
        self.max_lora_rank = max_lora_rank
        self.providers = providers or ProviderCatalog([])
        self._tasks: set[asyncio.Task] = set()

    # gRPC methods: domain errors become statuses the gateway maps to HTTP codes.
    async def CreateJob(self, request, context):
        return await answer_or_abort(context, self._create, request)

    async def GetJob(self, request, context):
        return await answer_or_abort(context, lambda r: self._get(r.org, r.id), request)

    async def ListJobs(self, request, context):
        return await answer_or_abort(context, self._list, request)

    async def CancelJob(self, request, context):
        return await answer_or_abort(context, self._cancel, request)

    async def ListJobEvents(self, request, context):
        return await answer_or_abort(context, self._events, request)

    async def PauseJob(self, request, context):
        return await answer_or_abort(context, self._pause, request)

    async def ResumeJob(self, request, context):
        return await answer_or_abort(context, self._resume, request)

    async def ListJobCheckpoints(self, request, context):
        return await answer_or_abort(context, self._checkpoints, request)

    async def _create(self, request) -> trainer_pb2.Job:
        if request.model not in CATALOG and self.providers.provider_for(request.model) is None:
            choices = ", ".join(sorted([*CATALOG, *self.providers.model_names]))
            raise invalid(f"model {request.model!r} cannot be fine-tuned; choose one of {choices}", "model")
        for param, file_id in (
            ("training_file", request.training_file),
            ("validation_file", request.validation_file),
        ):
            if param == "validation_file" and not file_id:
                continue
            record = await self.bus.files.get(request.org, file_id)
            if record is None:
                raise not_found(f"no file {file_id!r}", param)
            if record.purpose != "fine-tune":
                raise invalid(
                    f"file {file_id} has purpose {record.purpose!r}; upload it with purpose 'fine-tune'",
                    param,
                )
        method = parse_method(whole_floats_to_int(json_format.MessageToDict(request.method)))
        await self._check_adapter(request.model, method)
        gate = await self._promotion_gate(request)
        job = JobRecord(
            id=new_id("ftjob"),
            org=request.org,
            model=request.model,
            training_file=request.training_file,
            validation_file=request.validation_file or None,
            seed=request.seed if request.HasField("seed") else int(time.time()) % 2**31,
            suffix=request.suffix or None,
            metadata=dict(request.metadata) or None,
            method=method,
            eval=gate.model_dump(exclude_none=True) if gate else None,
        )
        await self.bus.jobs.create(job.org, job.id, job)
        await self.bus.publish_event(
            make_event("job", job.id, job.org, "created", f"Created fine-tuning job: {job.id}")
        )
        self._spawn(self.validate_and_enqueue(job.org, job.id))
        return job_to_proto(job)

    async def _promotion_gate(self, request) -> PromotionGate | None:
        """The job's `eval`: an existing eval of the org, thresholds over its criteria, and a file
        to run it over (the validation file unless the gate names one)."""
        if not request.eval_json:
            return None
        try:
            gate = parse_gate(json.loads(request.eval_json))
            if gate.testing_criteria is not None:
                raise GateError("an eval_id (inline criteria become an eval first)", "eval.eval_id")
            eval_record = await self.bus.eval_defs.get(request.org, gate.eval_id)
            if eval_record is None:
                raise GateError(f"no eval {gate.eval_id!r}", "eval.eval_id")
            check_thresholds(gate, [c.get("name", "") for c in eval_record.testing_criteria])
        except ValueError as exc:  # GateError, or JSON that does not parse
            raise invalid(getattr(exc, "message", str(exc)), getattr(exc, "param", "eval")) from None
        file_id = gate.file_id or request.validation_file
        if not file_id:
            raise invalid("give eval.file_id, or a validation_file to evaluate on", "eval.file_id")
        if gate.file_id and await self.bus.files.get(request.org, gate.file_id) is None:
            raise not_found(f"no file {gate.file_id!r}", "eval.file_id")
        if gate.compare_to not in (None, "base", *CATALOG):
            parsed = parse_model_id(gate.compare_to)
            other = await self.bus.models.get(request.org, model_key_id(*parsed)) if parsed else None
            if other is None or other.id != gate.compare_to:
                raise not_found(f"no model {gate.compare_to!r}", "eval.compare_to")
        return gate

    async def _check_adapter(self, model: str, method: dict) -> None:
        """A LoRA setting the base model cannot take is a 400 now, when the model is at hand
        (built in the cache); otherwise the worker checks it before loading the weights."""
        if self.model_cache is None or not (self.model_cache / model / "config.json").exists():
            return
        from tunery_trainer.model_setup import ConfigError, check_adapter_config

        try:
            await asyncio.to_thread(
                check_adapter_config, self.model_cache / model, hyperparameters_of(method), self.max_lora_rank
            )
        except ConfigError as exc:
            raise invalid(exc.message, exc.param, "invalid_hyperparameters") from None

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume_pending(self) -> None:
        """After a restart: jobs left in validating_files are validated (again), and queued jobs
        are put on the queue again, in case a crash came between a resume and its enqueue (a
        duplicate message finds the job's lease, a paused or a final job and is dropped)."""
        for job in await self.bus.jobs.list():
            if job.status == "validating_files":
                self._spawn(self.validate_and_enqueue(job.org, job.id))
            elif job.status == "queued":
                await self._enqueue(job.org, job.id)

    async def _enqueue(self, org: str, job_id: str, msg_id: str | None = None) -> None:
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await self.bus.js.publish(TRAIN_SUBJECT, JobRef(org, job_id).encode(), headers=headers)

    async def validate_and_enqueue(self, org: str, job_id: str) -> None:
        job = await self.bus.jobs.get(org, job_id)
        if job is None or job.status != "validating_files":
            return
        await self.bus.publish_event(make_event("job", job_id, org, "validating", "Validating training file"))
        try:
            error = await self._validation_error(job)
        except grpc.aio.AioRpcError as exc:
            message = f"could not validate the files ({exc.code().name}: {exc.details()}); retry the job"
            error = JobError(code="validation_unavailable", message=message)
        if error:
            await self._fail(org, job_id, error)
            return

        # Enqueue first, then say so: a crash in between leaves the job in validating_files, which
        # a restart validates and enqueues again (a duplicate message finds the lease or a final job).
        current = await self.bus.jobs.get(org, job_id)
        if current is None or current.status != "validating_files":
            return  # cancelled meanwhile
        await self._enqueue(org, job_id, msg_id=job_id)

        def to_queued(rec: JobRecord):
            return rec.model_copy(update={"status": "queued"}) if rec.status == "validating_files" else None

        updated = await self.bus.jobs.mutate(org, job_id, to_queued)
        if updated is not None and updated.status == "queued":
            await self.bus.publish_event(
                make_event("job", job_id, org, "queued", "Files validated; job queued")
            )

    async def _validation_error(self, job: JobRecord) -> JobError | None:
        deadline = time.monotonic() + self.validation_timeout_s
        kind = method_type(job.method)
        wanted = DATA_FORMATS[kind]
        for param, file_id in (
            ("training_file", job.training_file),
            ("validation_file", job.validation_file),
        ):
            if not file_id:
                continue
            request = dataprep_pb2.ValidateFileRequest(
                org=job.org,
                file_id=file_id,
                # data-prep knows local models only; the provider checks its own again
                model=job.model if job.model in CATALOG else DEFAULT_BASE_MODEL,
                training=param == "training_file",
            )
            while True:
                try:
                    report = await self.dataprep.ValidateFile(
                        request, timeout=max(1.0, deadline - time.monotonic())
                    )
                    break
                except grpc.aio.AioRpcError as exc:
                    # data-prep restarting: retry until the deadline, as a queue consumer would.
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(1)
            if report.n_examples and report.format and report.format != wanted:
                message = (
                    f"a {kind!r} job needs a {param.replace('_', ' ')} in {wanted} format "
                    f"({FORMAT_SHAPES[wanted]}); {file_id} is in {report.format} format"
                )
                return JobError(code=f"invalid_{param}", message=message, param=param)
            if report.n_errors:
                first = report.errors[0].message
                more = f" (and {report.n_errors - 1} more errors)" if report.n_errors > 1 else ""
                return JobError(code=f"invalid_{param}", message=f"{first}{more}", param=param)
        return None

    async def _fail(self, org: str, job_id: str, error: JobError) -> None:
        def to_failed(rec: JobRecord):
            if rec.is_final:
                return None
            return rec.model_copy(update={"status": "failed", "error": error, "finished_at": now()})

        await self.bus.jobs.mutate(org, job_id, to_failed)
        await self.bus.publish_event(make_event("job", job_id, org, "failed", error.message, level="error"))

    async def _get(self, org: str, job_id: str) -> trainer_pb2.Job:
        job = await self.bus.jobs.get(org, job_id)
        if job is None:
            raise not_found(f"no fine-tuning job {job_id!r}", "fine_tuning_job_id")
        return job_to_proto(job)

    async def _list(self, request) -> trainer_pb2.ListJobsResponse:
        jobs, has_more = paginate(
            await self.bus.jobs.list(request.org), request.page.after, request.page.limit
        )
        return trainer_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs], has_more=has_more)

    async def _cancel(self, request) -> trainer_pb2.Job:
        await self._get(request.org, request.id)

        def to_cancelled(rec: JobRecord):
            if rec.is_final:
                raise conflict(f"job {rec.id} is already {rec.status}; it cannot be cancelled")
            return rec.model_copy(update={"status": "cancelled", "finished_at": now()})

        job = await self.bus.jobs.mutate(request.org, request.id, to_cancelled)
        await self.bus.publish_event(make_event("job", job.id, job.org, "cancelled", "Job cancelled"))
        return job_to_proto(job)

    async def _pause(self, request) -> trainer_pb2.Job:
        await self._get(request.org, request.id)

        def to_paused(rec: JobRecord):
            if rec.status not in PAUSABLE:
                raise conflict(f"job {rec.id} is {rec.status}; only a running or queued job can be paused")
            return rec.model_copy(update={"status": "paused"})

        job = await self.bus.jobs.mutate(request.org, request.id, to_paused)
        # A running worker sees the status through its watch on the record, saves a checkpoint and
        # lets the job go; a queued job's message is dropped by the worker that receives it.
        await self.bus.publish_event(
            make_event("job", job.id, job.org, "paused", "Job paused; resume it to continue")
        )
        return job_to_proto(job)

    async def _resume(self, request) -> trainer_pb2.Job:
        await self._get(request.org, request.id)

        def to_queued(rec: JobRecord):
            if rec.status != "paused":
                raise conflict(f"job {rec.id} is {rec.status}; only a paused job can be resumed")
            return rec.model_copy(update={"status": "queued"})

        job = await self.bus.jobs.mutate(request.org, request.id, to_queued)
        # Queued before enqueued: a worker drops a message of a paused job.
        try:
            await self._enqueue(job.org, job.id)
        except Exception as exc:
            await self.bus.jobs.mutate(
                job.org,
                job.id,
                lambda rec: rec.model_copy(update={"status": "paused"}) if rec.status == "queued" else None,
            )
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"could not queue the job: {exc}") from exc
        checkpoint = resume_point(job)
        where = f"its checkpoint at step {checkpoint.step_number}" if checkpoint else "its start"
        await self.bus.publish_event(
            make_event("job", job.id, job.org, "queued", f"Job resumed; queued to continue from {where}")
        )
        return job_to_proto(job)

    async def _checkpoints(self, request) -> trainer_pb2.ListJobCheckpointsResponse:
        job = await self.bus.jobs.get(request.org, request.id)
        if job is None:
            raise not_found(f"no fine-tuning job {request.id!r}", "fine_tuning_job_id")
        newest_first = list(reversed(job.checkpoints))
        page, has_more = paginate(newest_first, request.page.after, request.page.limit)
        return trainer_pb2.ListJobCheckpointsResponse(
            checkpoints=[checkpoint_to_proto(job.id, c) for c in page], has_more=has_more
        )

    async def _events(self, request) -> trainer_pb2.ListJobEventsResponse:
        await self._get(request.org, request.id)
        events = list(reversed(await self.bus.read_events("job", request.id)))
        page, has_more = paginate(events, request.page.after, request.page.limit)
        return trainer_pb2.ListJobEventsResponse(events=page, has_more=has_more)
