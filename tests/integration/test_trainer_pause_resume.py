"""Stopping a running job with a checkpoint and continuing it elsewhere: pause/resume, a worker's
graceful shutdown, and a redelivered message while a long step holds the lease.

Real NATS, data-prep and trainer gRPC servers, real workers training the tiny model; `HeldTrain`
holds the run in its first report so each test acts while the job is certainly mid-run.
"""

import asyncio

import grpc
import pytest
from bus_helpers import upload, wait_status
from trainer_harness import (
    HeldTrain,
    chat_example,
    job_events,
    method,
    metrics_steps,
    trainer_services,
    wait_until,
)
from tunery.trainer.v1 import trainer_pb2
from tunery_common.bus import TRAIN_STREAM, TRAIN_SUBJECT
from tunery_common.workqueue import pull_work
from tunery_trainer.jobref import JobRef
from tunery_trainer.worker import DURABLE


@pytest.fixture
async def trainer(nats_url, model_cache, tmp_path):
    async with trainer_services(nats_url, model_cache, tmp_path / "work") as services:
        await upload(services.bus, "acme", "file-train", [chat_example(i) for i in range(16)])
        yield services


def job_request(**hyperparameters) -> dict:
    # 8 steps (2 epochs of 4), a report at each; periodic checkpoints every 5 steps.
    options = {"n_epochs": 2, "batch_size": 4, "eval_every_steps": 1, "checkpoint_every_steps": 5}
    return {"training_file": "file-train", "seed": 5, "method": method(**{**options, **hyperparameters})}


async def test_pause_saves_a_checkpoint_frees_the_worker_and_resume_continues(trainer):
    bus, stub = trainer.bus, trainer.stub
    held = HeldTrain(until_stop=True)
    stop = asyncio.Event()
    runner = asyncio.create_task(trainer.worker(held).run(stop))
    job = await trainer.create(**job_request())
    await held.wait_holding()  # step 1 reported; the loop waits until it is asked to stop

    paused = await stub.PauseJob(trainer_pb2.GetJobRequest(org="acme", id=job.id))
    assert paused.status == "paused"
    record = await wait_until(bus.jobs, "acme", job.id, lambda r: r["lease_owner"] is None)
    assert record["status"] == "paused"
    # The loop saved its state at the step it stopped at, and the worker kept it.
    [checkpoint] = record["checkpoints"]
    assert checkpoint["step_number"] == 1 and checkpoint["state_object"]
    events = await job_events(bus, job.id)
    assert [e.data["reason"] for e in events if e.what == "checkpoint"] == ["stop"]
    assert "job paused" in [e.message for e in events if e.what == "checkpoint"][0]

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PauseJob(trainer_pb2.GetJobRequest(org="acme", id=job.id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "paused" in info.value.details()

    # The worker is free: it trains another job while this one is paused.
    other = await trainer.create(**job_request(n_epochs=1))
    assert (await wait_status(bus, "acme", other.id, {"succeeded", "failed"}))["status"] == "succeeded"
    assert (await bus.jobs.get("acme", job.id)).status == "paused"

    resumed = await stub.ResumeJob(trainer_pb2.GetJobRequest(org="acme", id=job.id))
    assert resumed.status == "queued"
    done = await wait_status(bus, "acme", job.id, {"succeeded", "failed"})
    stop.set()
    await runner
    assert done["status"] == "succeeded", done["error"]

    events = await job_events(bus, job.id)
    whats = [e.what for e in events]
    resumed_at = whats.index("resumed")
    assert int(events[resumed_at].data["step"]) == 1
    assert "step 1" in events[resumed_at].message
    assert metrics_steps(events[:resumed_at]) == [1]
    assert metrics_steps(events[resumed_at:]) == list(range(2, 9))  # continued, not restarted
    assert whats.count("started") == 1
    assert [c["step_number"] for c in done["checkpoints"]] == [1, 4, 5, 8]

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ResumeJob(trainer_pb2.GetJobRequest(org="acme", id=job.id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "succeeded" in info.value.details()


async def test_a_shutdown_saves_a_checkpoint_and_another_worker_resumes(trainer):
    bus = trainer.bus
    held = HeldTrain(until_stop=True)
    first_stop = asyncio.Event()
    first = asyncio.create_task(trainer.worker(held).run(first_stop))
    job = await trainer.create(**job_request())
    await held.wait_holding()

    first_stop.set()  # what SIGTERM does to the trainer process
    await first
    record = await wait_until(bus.jobs, "acme", job.id, lambda r: r["lease_owner"] is None)
    assert record["status"] == "queued"
    assert [c["step_number"] for c in record["checkpoints"]] == [1]
    events = await job_events(bus, job.id)
    assert "worker shutting down" in [e.message for e in events if e.what == "checkpoint"][0]
    assert events[-1].what == "requeued"

    second_stop = asyncio.Event()
    second = asyncio.create_task(trainer.worker().run(second_stop))
    done = await wait_status(bus, "acme", job.id, {"succeeded", "failed"})
    second_stop.set()
    await second
    assert done["status"] == "succeeded", done["error"]
    events = await job_events(bus, job.id)
    resumed_at = [e.what for e in events].index("resumed")
    assert metrics_steps(events[resumed_at:]) == list(range(2, 9))


async def test_a_redelivered_message_never_steals_a_live_lease(trainer):
    """One step outlives the ack wait; heartbeats keep the lease, and a redelivery of the job's
    message to another worker is put back rather than run."""
    bus = trainer.bus
    held = HeldTrain()
    stop = asyncio.Event()
    owner = trainer.worker(held, ack_wait_s=2, heartbeat_s=0.5)
    runner = asyncio.create_task(owner.run(stop))
    job = await trainer.create(**job_request(n_epochs=1))
    await held.wait_holding()

    running = await bus.jobs.get("acme", job.id)
    assert (running.status, running.lease_owner) == ("running", owner.worker_id)
    # Held in one step until its lease has been renewed past the ack wait it was claimed with.
    await wait_until(bus.jobs, "acme", job.id, lambda r: r["lease_until"] > running.lease_until + 2)

    # The job's message comes again (as after a NATS restart) to another worker.
    await bus.js.publish(TRAIN_SUBJECT, JobRef("acme", job.id).encode())
    other = trainer.worker(ack_wait_s=2, heartbeat_s=0.5)
    queue = pull_work(bus.js, TRAIN_STREAM, TRAIN_SUBJECT, DURABLE, 2, asyncio.Event())
    redelivered = await anext(queue)
    await other.handle(redelivered, asyncio.Event())
    await queue.aclose()
    record = await bus.jobs.get("acme", job.id)
    assert (record.status, record.lease_owner) == ("running", owner.worker_id)

    held.release.set()
    done = await wait_status(bus, "acme", job.id, {"succeeded", "failed"})
    stop.set()
    await runner
    assert done["status"] == "succeeded", done["error"]
    events = await job_events(bus, job.id)
    assert [e.what for e in events].count("started") == 1
    assert metrics_steps(events) == list(range(1, 5))  # one run, every step once
