"""The fine-tuning routes for checkpoints, pause/resume and result files, driven by the official
openai client through the gateway, in front of real trainer and data-prep gRPC servers and a
real worker."""

import asyncio
import csv
import io

import openai
import pytest
from bus_helpers import upload, wait_status
from gateway_harness import serve_gateway
from trainer_harness import chat_example, trainer_services, wait_until
from tunery_gateway.settings import GatewaySettings


@pytest.fixture
async def routes(nats_url, model_cache, tmp_path, monkeypatch):
    async with trainer_services(nats_url, model_cache, tmp_path / "work") as trainer:
        monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme,k2:other")
        settings = GatewaySettings(nats_url=nats_url, home=tmp_path / "home", trainer_addr=trainer.address)
        with serve_gateway(settings) as url:
            clients = {
                key: openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
                for key in ("k1", "k2")
            }
            yield trainer, clients["k1"], clients["k2"]


async def test_pause_resume_checkpoints_and_results_through_the_openai_client(routes):
    trainer, client, other = routes
    await upload(trainer.bus, "acme", "file-train", [chat_example(i) for i in range(16)])
    supervised = {"n_epochs": 2, "batch_size": 4, "checkpoint_every_steps": 3}
    job = await client.fine_tuning.jobs.create(
        model="tiny-random-llama",
        training_file="file-train",
        seed=4,
        method={"type": "supervised", "supervised": {"hyperparameters": supervised}},
    )
    await wait_status(trainer.bus, "acme", job.id, {"queued"})

    # No worker runs yet: the job waits in the queue, where it can be paused and resumed.
    paused = await client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused" and paused.id == job.id
    with pytest.raises(openai.ConflictError) as info:
        await client.fine_tuning.jobs.pause(job.id)
    assert info.value.body["message"] == f"job {job.id} is paused; only a running or queued job can be paused"
    assert (await client.fine_tuning.jobs.resume(job.id)).status == "queued"
    with pytest.raises(openai.ConflictError) as info:
        await client.fine_tuning.jobs.resume(job.id)
    assert "is queued; only a paused job can be resumed" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        await other.fine_tuning.jobs.pause(job.id)

    stop = asyncio.Event()
    runner = asyncio.create_task(trainer.worker().run(stop))
    await wait_until(trainer.bus.jobs, "acme", job.id, lambda r: r["status"] in ("succeeded", "failed"))
    stop.set()
    await runner
    done = await client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error

    # 8 steps: checkpoints at 3, 4 (epoch), 6 and 8 (epoch), listed newest first.
    page = await client.fine_tuning.jobs.checkpoints.list(job.id, limit=2)
    assert [c.step_number for c in page.data] == [8, 6] and page.has_more
    everything = [c async for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=2)]
    assert [c.step_number for c in everything] == [8, 6, 4, 3]
    newest = everything[0]
    assert newest.object == "fine_tuning.job.checkpoint" and newest.fine_tuning_job_id == job.id
    assert newest.fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-8"
    assert newest.metrics.step == 8 and newest.metrics.train_loss > 0
    assert newest.metrics.valid_loss is None  # no validation file
    with pytest.raises(openai.NotFoundError):
        await other.fine_tuning.jobs.checkpoints.list(job.id)

    [result_file] = done.result_files
    assert (await client.files.retrieve(result_file)).purpose == "fine-tune-results"
    rows = list(csv.reader(io.StringIO((await client.files.content(result_file)).text)))
    assert rows[0][:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(row[0]) for row in rows[1:]] == list(range(1, 9))


async def test_bad_methods_are_400s_naming_the_field(routes):
    trainer, client, _ = routes
    await upload(trainer.bus, "acme", "file-train", [chat_example(i) for i in range(12)])

    async def param_of(method: dict) -> str:
        with pytest.raises(openai.BadRequestError) as info:
            await client.fine_tuning.jobs.create(
                model="tiny-random-llama", training_file="file-train", method=method
            )
        return info.value.body["param"]

    lora = {"type": "supervised", "supervised": {"hyperparameters": {"lora": {"rank": 8}}}}
    assert await param_of(lora) == "method.supervised.hyperparameters.lora.rank"
    too_wide = {"type": "dpo", "dpo": {"hyperparameters": {"lora": {"r": 256}}}}
    assert await param_of(too_wide) == "method.dpo.hyperparameters.lora.r"
    assert await param_of({"type": "reinforcement"}) == "method.type"
