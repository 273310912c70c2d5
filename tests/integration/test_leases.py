"""Leases over real NATS KV: a redelivered job never runs twice; a dead worker's job is taken over."""

import time

import pytest
from tunery_common.bus import Bus
from tunery_common.leases import Lease
from tunery_common.records import EvalRunRecord, JobError, JobRecord


@pytest.fixture
async def bus(nats_url):
    bus = await Bus.connect(nats_url, "test")
    yield bus
    await bus.close()


async def test_a_live_lease_keeps_a_redelivered_job_from_running_twice(bus):
    job = JobRecord(
        id="ftjob-lease", org="acme", model="tiny-random-llama", training_file="f", status="queued"
    )
    await bus.jobs.create("acme", job.id, job)
    first = Lease(bus.jobs, "acme", job.id, "worker-1", 30)
    second = Lease(bus.jobs, "acme", job.id, "worker-2", 30)

    claimed = await first.claim()
    assert (
        isinstance(claimed, JobRecord) and claimed.status == "running" and claimed.lease_owner == "worker-1"
    )
    assert await second.claim() == "busy"

    # The first worker died: once its lease has run out, the redelivered job is taken over.
    await bus.jobs.mutate("acme", job.id, lambda r: r.model_copy(update={"lease_until": time.time() - 1}))
    taken = await second.claim()
    assert isinstance(taken, JobRecord) and taken.lease_owner == "worker-2"

    failed = await second.fail(JobError(code="training_failed", message="boom"))
    assert failed.status == "failed" and failed.lease_owner is None and failed.finished_at
    assert await first.claim() is None  # finished work is just acked
    assert await first.finish({"status": "succeeded"}) is None  # and never overwritten


async def test_release_and_reset_on_claim(bus):
    record = EvalRunRecord(
        id="evalrun-1", org="acme", eval_id="eval-1", name="r", data_source={}, n_items=3, n_done=2
    )
    await bus.eval_runs.create("acme", record.id, record)
    lease = Lease(bus.eval_runs, "acme", record.id, "worker-1", 30)
    claimed = await lease.claim(reset={"n_done": 0})
    assert claimed.n_done == 0 and claimed.status == "running"
    released = await lease.release()
    assert released.status == "queued" and released.lease_owner is None
    done = await lease.finish({"status": "completed", "n_done": 3})
    assert done.status == "completed" and done.n_done == 3
