"""`/v1/fine_tuning/jobs`: the trainer's job control plane over gRPC (create, list, retrieve, cancel,
pause, resume, events, checkpoints)."""

from typing import Annotated

import grpc
from fastapi import APIRouter, Depends, Request
from tunery.common.v1 import common_pb2
from tunery.evaljudge.v1 import evaljudge_pb2
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc

from tunery_gateway.auth import Org
from tunery_gateway.dependencies import EvalJudgeDep, SettingsDep, TrainerDep
from tunery_gateway.pagination import Page, page_query
from tunery_gateway.promotion_gate import create_gate_eval
from tunery_gateway.schemas.fine_tuning import (
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobCreate,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
)

router = APIRouter(tags=["fine-tuning"])

# Jobs read per trainer call while filtering by metadata.
_SCAN_PAGE = 100


@router.post("/fine_tuning/jobs")
async def create_job(
    # The trainer's dependency comes last: the last one names the service in a 503.
    body: FineTuningJobCreate,
    org: Org,
    evaljudge: EvalJudgeDep,
    trainer: TrainerDep,
    settings: SettingsDep,
) -> FineTuningJob:
    inline_eval = await create_gate_eval(body, org, evaljudge, settings.rpc_timeout_s)
    try:
        job = await trainer.CreateJob(body.to_proto(org), timeout=settings.rpc_timeout_s)
    except grpc.aio.AioRpcError:
        if inline_eval:  # the job was refused: its gate's eval goes with it
            request = evaljudge_pb2.GetEvalRequest(org=org, eval_id=inline_eval)
            await evaljudge.DeleteEval(request, timeout=settings.rpc_timeout_s)
        raise
    return FineTuningJob.from_proto(job)


def _metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[k]=v` query parameters, as the openai SDK sends a `metadata` filter."""
    return {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }


async def _matching_jobs(
    trainer: trainer_pb2_grpc.TrainerStub, org: str, page: Page, wanted: dict[str, str], timeout: float
) -> tuple[list[trainer_pb2.Job], bool]:
    """Pages through the trainer's list, keeping the jobs whose metadata has every wanted pair."""
    found: list[trainer_pb2.Job] = []
    after = page.after or ""
    while True:
        reply = await trainer.ListJobs(
            trainer_pb2.ListJobsRequest(org=org, page=common_pb2.PageRequest(after=after, limit=_SCAN_PAGE)),
            timeout=timeout,
        )
        for job in reply.jobs:
            if all(job.metadata.get(key) == value for key, value in wanted.items()):
                found.append(job)
                if len(found) > page.limit:
                    return found[: page.limit], True
        if not reply.has_more or not reply.jobs:
            return found, False
        after = reply.jobs[-1].id


@router.get("/fine_tuning/jobs")
async def list_jobs(
    request: Request,
    org: Org,
    trainer: TrainerDep,
    settings: SettingsDep,
    page: Annotated[Page, Depends(page_query(default=20, maximum=100))],
) -> FineTuningJobList:
    wanted = _metadata_filter(request)
    if wanted:
        jobs, has_more = await _matching_jobs(trainer, org, page, wanted, settings.rpc_timeout_s)
    else:
        reply = await trainer.ListJobs(
            trainer_pb2.ListJobsRequest(org=org, page=page.to_proto()), timeout=settings.rpc_timeout_s
        )
        jobs, has_more = list(reply.jobs), reply.has_more
    return FineTuningJobList(data=[FineTuningJob.from_proto(job) for job in jobs], has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}")
async def retrieve_job(job_id: str, org: Org, trainer: TrainerDep, settings: SettingsDep) -> FineTuningJob:
    job = await trainer.GetJob(trainer_pb2.GetJobRequest(org=org, id=job_id), timeout=settings.rpc_timeout_s)
    return FineTuningJob.from_proto(job)


@router.post("/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, org: Org, trainer: TrainerDep, settings: SettingsDep) -> FineTuningJob:
    job = await trainer.CancelJob(
        trainer_pb2.GetJobRequest(org=org, id=job_id), timeout=settings.rpc_timeout_s
    )
    return FineTuningJob.from_proto(job)


@router.post("/fine_tuning/jobs/{job_id}/pause")
async def pause_job(job_id: str, org: Org, trainer: TrainerDep, settings: SettingsDep) -> FineTuningJob:
    """A running job saves a checkpoint at its next step and frees its worker; a queued one waits."""
    job = await trainer.PauseJob(
        trainer_pb2.GetJobRequest(org=org, id=job_id), timeout=settings.rpc_timeout_s
    )
    return FineTuningJob.from_proto(job)


@router.post("/fine_tuning/jobs/{job_id}/resume")
async def resume_job(job_id: str, org: Org, trainer: TrainerDep, settings: SettingsDep) -> FineTuningJob:
    """A paused job is queued again and continues from its latest checkpoint."""
    job = await trainer.ResumeJob(
        trainer_pb2.GetJobRequest(org=org, id=job_id), timeout=settings.rpc_timeout_s
    )
    return FineTuningJob.from_proto(job)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
async def list_job_checkpoints(
    job_id: str,
    org: Org,
    trainer: TrainerDep,
    settings: SettingsDep,
    page: Annotated[Page, Depends(page_query(default=10, maximum=100))],
) -> FineTuningJobCheckpointList:
    reply = await trainer.ListJobCheckpoints(
        trainer_pb2.ListJobCheckpointsRequest(org=org, id=job_id, page=page.to_proto()),
        timeout=settings.rpc_timeout_s,
    )
    data = [FineTuningJobCheckpoint.from_proto(c) for c in reply.checkpoints]  # newest first
    return FineTuningJobCheckpointList(
        data=data,
        has_more=reply.has_more,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/fine_tuning/jobs/{job_id}/events")
async def list_job_events(
    job_id: str,
    org: Org,
    trainer: TrainerDep,
    settings: SettingsDep,
    page: Annotated[Page, Depends(page_query(default=20, maximum=1000))],
) -> FineTuningJobEventList:
    reply = await trainer.ListJobEvents(
        trainer_pb2.ListJobEventsRequest(org=org, id=job_id, page=page.to_proto()),
        timeout=settings.rpc_timeout_s,
    )
    return FineTuningJobEventList(
        data=[FineTuningJobEvent.from_proto(event) for event in reply.events], has_more=reply.has_more
    )
