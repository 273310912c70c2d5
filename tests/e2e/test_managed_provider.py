"""Jobs run by a managed provider: a second Tunery stack plays the provider (it speaks OpenAI's
API), our side is a real NATS bus, and `run_managed_job` mirrors the remote job into ours; the
last test goes through our whole stack (gateway → trainer control → trainer worker → provider)."""

import asyncio
import json
from collections import Counter
from contextlib import asynccontextmanager

import openai
import pytest
from openai import AsyncOpenAI
from stack_launch import launched_stack
from tunery_common.bus import Bus
from tunery_common.ids import new_id
from tunery_common.leases import Lease
from tunery_common.natsserver import free_port
from tunery_common.records import FINAL_STATUSES, FileRecord, JobRecord, now
from tunery_trainer.managed import METADATA_KEY, ManagedResult, run_managed_job
from tunery_trainer.providers import Provider

pytestmark = pytest.mark.e2e

PROVIDER_KEYS = {"provider-org": "provider-key"}
ORG = "acme"
OUR_KEYS = {ORG: "our-key"}
LOCAL_MODEL = "provider-tiny"
COLORS = ["red", "green", "blue", "yellow"]


def example(i: int) -> dict:
    color = COLORS[i % len(COLORS)]
    return {
        "messages": [
            {"role": "user", "content": f"What colour is item {i}? It is {color}."},
            {"role": "assistant", "content": json.dumps({"color": color})},
        ]
    }


@pytest.fixture(scope="module")
def provider_stack(tmp_path_factory):
    with launched_stack(tmp_path_factory.mktemp("provider-home"), PROVIDER_KEYS) as running:
        yield running


def provider_settings(stack, **overrides) -> dict:
    """The provider stack as a providers entry (TUNERY_TRAINER_PROVIDERS)."""
    return {
        "name": "tunery-b",
        "base_url": stack.base_url,
        "api_key": PROVIDER_KEYS["provider-org"],
        "models": {LOCAL_MODEL: "tiny-random-llama"},
        "poll_interval_s": 0.5,
        **overrides,
    }


def provider_for(stack, **overrides) -> Provider:
    return Provider(**provider_settings(stack, **overrides))


@pytest.fixture
async def remote(provider_stack):
    """The provider seen by its own customer: to count its jobs and read them back."""
    client = AsyncOpenAI(
        base_url=provider_stack.base_url, api_key=PROVIDER_KEYS["provider-org"], max_retries=0, timeout=120
    )
    yield client
    await client.close()


@pytest.fixture
async def bus(nats_url):
    bus = await Bus.connect(nats_url, "our-side")
    yield bus
    await bus.close()


async def store_file(bus: Bus, rows: list[dict]) -> str:
    data = "\n".join(json.dumps(r) for r in rows).encode()
    record = FileRecord(
        id=new_id("file"), org=ORG, bytes=len(data), filename="train.jsonl", purpose="fine-tune"
    )
    await bus.put_object(record.object_name, data)
    await bus.files.create(ORG, record.id, record)
    return record.id


async def queued_job(bus: Bus, n_train: int, hyperparameters: dict, validation: bool = False) -> JobRecord:
    """A job as the control plane leaves it on the queue, on the provider's model."""
    job = JobRecord(
        id=new_id("ftjob"),
        org=ORG,
        model=LOCAL_MODEL,
        training_file=await store_file(bus, [example(i) for i in range(n_train)]),
        validation_file=await store_file(bus, [example(i) for i in range(100, 104)]) if validation else None,
        status="queued",
        seed=3,
        suffix="mirror",
        metadata={"team": "support"},
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    )
    await bus.jobs.create(ORG, job.id, job)
    return job


async def claim(bus: Bus, job_id: str, worker: str) -> tuple[Lease, JobRecord]:
    lease = Lease(bus.jobs, ORG, job_id, worker, 60)
    claimed = await lease.claim()
    assert isinstance(claimed, JobRecord), claimed
    return lease, claimed


async def wait_until(bus: Bus, job_id: str, condition) -> JobRecord:
    """Our job record once `condition` holds: a KV watch, no polling."""
    watcher = await bus.jobs.kv.watch(bus.jobs.key(ORG, job_id))
    try:
        async with asyncio.timeout(600):  # against hangs only
            async for entry in watcher:
                if entry is not None and entry.value:
                    record = JobRecord.model_validate_json(entry.value)
                    if condition(record):
                        return record
    finally:
        await watcher.stop()


@asynccontextmanager
async def stop_when(bus: Bus, job_id: str, request: str, condition):
    """`stop_requested` as a worker's watch on the job record gives it: `request` once
    `condition(record)` has held."""
    state: dict[str, str | None] = {"stop": None}

    async def watch():
        await wait_until(bus, job_id, condition)
        state["stop"] = request

    task = asyncio.create_task(watch())
    try:
        yield lambda: state["stop"]
    finally:
        task.cancel()


def has_remote_job(record: JobRecord) -> bool:
    return record.provider_job_id is not None


async def remote_job_ids(remote: AsyncOpenAI) -> set[str]:
    return {job.id async for job in remote.fine_tuning.jobs.list(limit=100)}


async def test_remote_job_is_mirrored_once_across_a_restart(provider_stack, remote, bus):
    provider = provider_for(provider_stack)
    before = await remote_job_ids(remote)
    job = await queued_job(bus, 12, {"n_epochs": 1, "batch_size": 4}, validation=True)

    # A worker shut down right after it created the remote job: that job runs on.
    lease, claimed = await claim(bus, job.id, "worker-1")
    async with stop_when(bus, job.id, "shutdown", has_remote_job) as stop_requested:
        first = await run_managed_job(bus, claimed, provider, lease, stop_requested)
    assert first == ManagedResult(stopped="shutdown")
    remote_id = (await bus.jobs.get(ORG, job.id)).provider_job_id
    mirrored_before_restart = [
        e for e in await bus.read_events("job", job.id) if e.what == "provider_reported"
    ]
    assert mirrored_before_restart  # at least the remote "created" event
    assert await lease.release()

    # The redelivered job re-attaches through provider_job_id and follows the job to its end.
    lease, claimed = await claim(bus, job.id, "worker-2")
    second = await run_managed_job(bus, claimed, provider, lease, lambda: None)

    assert second == ManagedResult(status="succeeded")
    assert await remote_job_ids(remote) - before == {remote_id}  # one remote job for both runs
    remote_job = await remote.fine_tuning.jobs.retrieve(remote_id)
    assert remote_job.status == "succeeded", remote_job.error
    assert remote_job.model == "tiny-random-llama" and remote_job.seed == 3
    assert remote_job.user_provided_suffix == "mirror"
    assert remote_job.metadata == {"team": "support", METADATA_KEY: job.id}
    assert remote_job.validation_file is not None

    ours = await bus.jobs.get(ORG, job.id)
    assert ours.status == "succeeded" and ours.error is None and ours.lease_owner is None
    assert ours.provider_job_id == remote_id
    assert ours.fine_tuned_model == remote_job.fine_tuned_model is not None
    assert ours.trained_tokens == remote_job.trained_tokens > 0
    hyperparameters = ours.method["supervised"]["hyperparameters"]
    assert (hyperparameters["n_epochs"], hyperparameters["batch_size"]) == (1, 4)
    assert hyperparameters["learning_rate_multiplier"] == remote_job.hyperparameters.learning_rate_multiplier

    try:  # a provider without checkpoints (404) mirrors none
        remote_checkpoints = [c async for c in remote.fine_tuning.jobs.checkpoints.list(remote_id)]
    except openai.NotFoundError:
        remote_checkpoints = []
    remote_checkpoints.sort(key=lambda c: c.step_number)
    assert [(c.id, c.step_number, c.fine_tuned_model_checkpoint) for c in ours.checkpoints] == [
        (c.id, c.step_number, c.fine_tuned_model_checkpoint) for c in remote_checkpoints
    ]

    assert len(ours.result_files) == len(remote_job.result_files)
    for our_file, remote_file in zip(ours.result_files, remote_job.result_files, strict=True):
        record = await bus.files.get(ORG, our_file)
        remote_content = (await remote.files.content(remote_file)).content
        assert await bus.get_object(record.object_name) == remote_content

    # Every remote event exactly once (the ones the first run mirrored too), with its data.
    remote_events = [e async for e in remote.fine_tuning.jobs.list_events(remote_id, limit=100)]
    our_events = await bus.read_events("job", job.id)
    mirrored = [e for e in our_events if e.what in ("metrics", "provider_reported")]
    assert Counter((e.message, e.created_at, e.level) for e in mirrored) == Counter(
        (e.message, e.created_at, e.level) for e in remote_events
    )
    remote_metrics = sorted((e.data for e in remote_events if e.type == "metrics"), key=lambda d: d["step"])
    our_metrics = sorted(
        (json.loads(json.dumps(dict(e.data))) for e in mirrored if e.type == "metrics"),
        key=lambda d: d["step"],
    )
    assert remote_metrics and len(our_metrics) == len(remote_metrics)
    for ours_data, theirs in zip(our_metrics, remote_metrics, strict=True):
        assert ours_data.keys() == theirs.keys()
        assert ours_data == pytest.approx(theirs)
    whats = [e.what for e in our_events]
    assert whats.count("started") == 1 and whats.count("reattached") == 1
    assert whats[-1] == "succeeded"


async def test_pause_resume_and_cancel_reach_the_remote_job(provider_stack, remote, bus):
    provider = provider_for(provider_stack)
    before = await remote_job_ids(remote)
    # Long enough (50 epochs of 200 examples) that the remote job runs until we cancel it.
    job = await queued_job(bus, 200, {"n_epochs": 50, "batch_size": 1})

    lease, claimed = await claim(bus, job.id, "worker-1")
    async with stop_when(bus, job.id, "shutdown", has_remote_job) as stop_requested:
        assert (await run_managed_job(bus, claimed, provider, lease, stop_requested)).stopped == "shutdown"
    remote_id = (await bus.jobs.get(ORG, job.id)).provider_job_id
    assert await lease.release()
    # As if the worker had died between creating the remote job and recording its id.
    await bus.jobs.mutate(ORG, job.id, lambda rec: rec.model_copy(update={"provider_job_id": None}))

    # Re-attached through the job's metadata, then paused: the remote job pauses too.
    lease, claimed = await claim(bus, job.id, "worker-2")
    async with stop_when(bus, job.id, "pause", lambda rec: rec.status == "paused") as stop_requested:
        run = asyncio.create_task(run_managed_job(bus, claimed, provider, lease, stop_requested))
        found = await wait_until(bus, job.id, has_remote_job)
        assert found.provider_job_id == remote_id
        await bus.jobs.mutate(ORG, job.id, lambda rec: rec.model_copy(update={"status": "paused"}))
        assert await run == ManagedResult(stopped="pause")
    assert (await remote.fine_tuning.jobs.retrieve(remote_id)).status == "paused"
    assert await lease.release()  # resumed: queued again

    # The next run resumes the remote job; cancelling ours then cancels it.
    resumed = asyncio.Event()

    async def on_resumed(_event) -> None:
        resumed.set()

    subscription = await bus.subscribe_events(f"tunery.events.job.{job.id}.resumed", on_resumed)
    lease, claimed = await claim(bus, job.id, "worker-3")
    async with stop_when(bus, job.id, "cancel", lambda rec: rec.status == "cancelled") as stop_requested:
        run = asyncio.create_task(run_managed_job(bus, claimed, provider, lease, stop_requested))
        async with asyncio.timeout(600):  # against hangs only
            await resumed.wait()
        assert (await remote.fine_tuning.jobs.retrieve(remote_id)).status != "paused"
        await bus.jobs.mutate(
            ORG, job.id, lambda rec: rec.model_copy(update={"status": "cancelled", "finished_at": now()})
        )
        assert await run == ManagedResult(stopped="cancel")
    await subscription.unsubscribe()

    assert await remote_job_ids(remote) - before == {remote_id}
    assert (await remote.fine_tuning.jobs.retrieve(remote_id)).status == "cancelled"
    whats = [e.what for e in await bus.read_events("job", job.id)]
    assert whats.count("started") == 1 and whats.count("reattached") == 2 and whats.count("resumed") == 1
    assert "provider_cancelled" in whats


async def test_remote_failure_fails_our_job_with_its_error(provider_stack, remote, bus):
    job = await queued_job(bus, 3, {"n_epochs": 1})  # the provider wants at least 10 examples
    lease, claimed = await claim(bus, job.id, "worker-1")

    result = await run_managed_job(bus, claimed, provider_for(provider_stack), lease, lambda: None)

    assert result == ManagedResult(status="failed")
    ours = await bus.jobs.get(ORG, job.id)
    remote_job = await remote.fine_tuning.jobs.retrieve(ours.provider_job_id)
    assert remote_job.status == "failed"
    assert ours.status == "failed"
    assert (ours.error.code, ours.error.message) == (remote_job.error.code, remote_job.error.message)
    assert ours.error.code == "invalid_training_file"


async def test_rejected_key_fails_at_once_without_a_remote_job(provider_stack, remote, bus):
    before = await remote_job_ids(remote)
    job = await queued_job(bus, 12, {"n_epochs": 1})
    lease, claimed = await claim(bus, job.id, "worker-1")

    provider = provider_for(provider_stack, api_key="not-a-key")
    result = await run_managed_job(bus, claimed, provider, lease, lambda: None)

    assert result == ManagedResult(status="failed")
    ours = await bus.jobs.get(ORG, job.id)
    assert ours.error.code == "provider_authentication_failed"
    assert "provider tunery-b" in ours.error.message and "401" in ours.error.message
    assert ours.provider_job_id is None
    assert await remote_job_ids(remote) == before


async def test_unreachable_provider_fails_after_its_retry_window(bus):
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    provider = Provider(name="down", base_url=base_url, api_key="k", models={LOCAL_MODEL: "m"}, retry_for_s=1)
    job = await queued_job(bus, 12, {"n_epochs": 1})
    lease, claimed = await claim(bus, job.id, "worker-1")

    result = await run_managed_job(bus, claimed, provider, lease, lambda: None)

    assert result == ManagedResult(status="failed")
    ours = await bus.jobs.get(ORG, job.id)
    assert ours.error.code == "provider_unavailable"
    assert base_url in ours.error.message and "did not answer" in ours.error.message
    events = await bus.read_events("job", job.id)
    assert events[-1].what == "failed" and events[-1].level == "error"


@pytest.fixture(scope="module")
def our_stack(provider_stack, tmp_path_factory):
    """Our own stack, configured with the provider stack as a managed provider."""
    providers = json.dumps([provider_settings(provider_stack)])
    with launched_stack(
        tmp_path_factory.mktemp("our-home"), OUR_KEYS, {"TUNERY_TRAINER_PROVIDERS": providers}
    ) as running:
        yield running


@pytest.fixture
async def ours(our_stack):
    """Our gateway, seen by our customer."""
    client = AsyncOpenAI(base_url=our_stack.base_url, api_key=OUR_KEYS[ORG], max_retries=0, timeout=120)
    yield client
    await client.close()


@pytest.fixture
async def our_bus(our_stack):
    bus = await Bus.connect(our_stack.nats_url, "e2e-test")
    yield bus
    await bus.close()


@asynccontextmanager
async def job_endings(bus: Bus):
    """`ending(job_id)`: a future of the job's closing event (succeeded, failed, cancelled), the
    last one a run publishes. Subscribed before the job exists, so the event cannot be missed."""
    endings: dict[str, asyncio.Future] = {}

    def ending(job_id: str) -> asyncio.Future:
        return endings.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def on_event(event) -> None:
        if event.what in FINAL_STATUSES and not ending(event.entity_id).done():
            ending(event.entity_id).set_result(event)

    subscription = await bus.subscribe_events("tunery.events.job.*.*", on_event)
    try:
        yield ending
    finally:
        await subscription.unsubscribe()


def event_key(event) -> tuple:
    return (event.message, event.created_at, event.level, event.type)


async def test_a_job_on_a_provider_model_runs_at_the_provider_through_our_stack(ours, our_bus, remote):
    rows = [example(i) for i in range(12)]
    training_file = await ours.files.create(
        file=("train.jsonl", "\n".join(json.dumps(r) for r in rows).encode()), purpose="fine-tune"
    )

    # A model that neither we nor a provider offer: a 400 that lists the provider's model too.
    with pytest.raises(openai.BadRequestError) as unknown:
        await ours.fine_tuning.jobs.create(model="no-such-model", training_file=training_file.id)
    assert unknown.value.param == "model"
    assert "'no-such-model'" in unknown.value.body["message"]
    assert LOCAL_MODEL in unknown.value.body["message"]
    assert "tiny-random-llama" in unknown.value.body["message"]  # the local models stay choices

    before = await remote_job_ids(remote)
    async with job_endings(our_bus) as ending:
        created = await ours.fine_tuning.jobs.create(
            model=LOCAL_MODEL,
            training_file=training_file.id,
            seed=5,
            suffix="through-gateway",
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}},
            },
        )
        assert created.model == LOCAL_MODEL and created.status == "validating_files"
        async with asyncio.timeout(600):  # against hangs only
            closing = await ending(created.id)
    job = await ours.fine_tuning.jobs.retrieve(created.id)
    assert job.status == "succeeded", job.error
    assert closing.what == "succeeded"
    record = await our_bus.jobs.get(ORG, job.id)

    # Exactly one remote job, created by our worker for this job, and it ran to its end there.
    assert record.provider_job_id is not None
    assert await remote_job_ids(remote) - before == {record.provider_job_id}
    remote_job = await remote.fine_tuning.jobs.retrieve(record.provider_job_id)
    assert remote_job.status == "succeeded", remote_job.error
    assert remote_job.model == "tiny-random-llama" and remote_job.seed == 5
    assert remote_job.user_provided_suffix == "through-gateway"
    assert remote_job.metadata == {METADATA_KEY: job.id}

    # Our job names the provider's model and its figures.
    assert job.model == LOCAL_MODEL
    assert job.fine_tuned_model == remote_job.fine_tuned_model is not None
    assert job.trained_tokens == remote_job.trained_tokens > 0
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (1, 4)

    # Our events, read through our gateway, hold every remote event with its data.
    our_events = [e async for e in ours.fine_tuning.jobs.list_events(job.id, limit=100)]
    remote_events = [e async for e in remote.fine_tuning.jobs.list_events(remote_job.id, limit=100)]
    assert not Counter(map(event_key, remote_events)) - Counter(map(event_key, our_events))
    remote_metrics = sorted((e.data for e in remote_events if e.type == "metrics"), key=lambda d: d["step"])
    our_metrics = sorted((e.data for e in our_events if e.type == "metrics"), key=lambda d: d["step"])
    assert remote_metrics and len(our_metrics) == len(remote_metrics)
    for ours_data, theirs in zip(our_metrics, remote_metrics, strict=True):
        assert ours_data.keys() == theirs.keys()
        assert ours_data == pytest.approx(theirs)
    assert our_events[0].id == closing.id  # listed newest first: nothing came after the end
    assert closing.message.startswith("The job has successfully completed at provider tunery-b")
    assert remote_job.fine_tuned_model in closing.message
