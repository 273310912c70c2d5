"""The job control plane: create, validate, list, cancel jobs and read their events.

Records live in the JetStream KV bucket; a created job is validated through data-prep, then put
on the train queue, where any worker picks it up.
"""

import asyncio
import logging
import time

import grpc
from google.protobuf import json_format
from pydantic import ValidationError
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunery_common.basemodels import CATALOG
from tunery_common.bus import TRAIN_SUBJECT, Bus, make_event
from tunery_common.grpc_errors import answer_or_abort, conflict, invalid, not_found
from tunery_common.ids import new_id
from tunery_common.pagination import paginate
from tunery_common.records import JobError, JobRecord, now

from tunery_trainer.hyperparams import Hyperparameters
from tunery_trainer.jobref import JobRef

log = logging.getLogger(__name__)

HP_PATH = "method.supervised.hyperparameters"


def whole_floats_to_int(value):
    """protobuf Struct turns every number into a float; give integers back their type."""
    if isinstance(value, dict):
        return {k: whole_floats_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_floats_to_int(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_method(method: dict) -> dict:
    """The OpenAI `method` object, checked; raises ServiceError naming the bad field."""
    method = method or {"type": "supervised"}
    kind = method.get("type", "supervised")
    if kind != "supervised":
        raise invalid(f"method type {kind!r} is not supported; use 'supervised'", "method.type")
    unknown = set(method) - {"type", "supervised"}
    if unknown:
        raise invalid(f"unknown key {sorted(unknown)[0]!r} in method", f"method.{sorted(unknown)[0]}")
    hp = (method.get("supervised") or {}).get("hyperparameters") or {}
    try:
        parsed = Hyperparameters.model_validate(hp)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"][:1])
        raise invalid(f"{HP_PATH}.{field}: {err['msg']}", f"{HP_PATH}.{field}") from None
    return {"type": "supervised", "supervised": {"hyperparameters": parsed.model_dump(exclude_unset=True)}}


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
    )
    msg.method.update(job.method)
    if job.error:
        msg.error.CopyFrom(
            trainer_pb2.JobError(code=job.error.code, message=job.error.message, param=job.error.param or "")
        )
    return msg


class TrainerControl(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, bus: Bus, dataprep: dataprep_pb2_grpc.DataPrepStub, validation_timeout_s: float = 120):
        self.bus = bus
        self.dataprep = dataprep
        self.validation_timeout_s = validation_timeout_s
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

    async def _create(self, request) -> trainer_pb2.Job:
        if request.model not in CATALOG:
            raise invalid(
                f"model {request.model!r} cannot be fine-tuned; choose one of {', '.join(sorted(CATALOG))}",
                "model",
            )
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
        )
        await self.bus.jobs.create(job.org, job.id, job)
        await self.bus.publish_event(
            make_event("job", job.id, job.org, "created", f"Created fine-tuning job: {job.id}")
        )
        self._spawn(self.validate_and_enqueue(job.org, job.id))
        return job_to_proto(job)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def resume_pending(self) -> None:
        """After a restart: jobs left in validating_files are validated (again)."""
        for job in await self.bus.jobs.list():
            if job.status == "validating_files":
                self._spawn(self.validate_and_enqueue(job.org, job.id))

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
        await self.bus.js.publish(
            TRAIN_SUBJECT, JobRef(org, job_id).encode(), headers={"Nats-Msg-Id": job_id}
        )

        def to_queued(rec: JobRecord):
            return rec.model_copy(update={"status": "queued"}) if rec.status == "validating_files" else None

        updated = await self.bus.jobs.mutate(org, job_id, to_queued)
        if updated is not None and updated.status == "queued":
            await self.bus.publish_event(
                make_event("job", job_id, org, "queued", "Files validated; job queued")
            )

    async def _validation_error(self, job: JobRecord) -> JobError | None:
        deadline = time.monotonic() + self.validation_timeout_s
        for param, file_id in (
            ("training_file", job.training_file),
            ("validation_file", job.validation_file),
        ):
            if not file_id:
                continue
            request = dataprep_pb2.ValidateFileRequest(
                org=job.org, file_id=file_id, model=job.model, training=param == "training_file"
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

    async def _events(self, request) -> trainer_pb2.ListJobEventsResponse:
        await self._get(request.org, request.id)
        events = list(reversed(await self.bus.read_events("job", request.id)))
        page, has_more = paginate(events, request.page.after, request.page.limit)
        return trainer_pb2.ListJobEventsResponse(events=page, has_more=has_more)
