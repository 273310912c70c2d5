"""How a worker ends a job that cannot train: settings the model cannot take, or out of memory;
either way the worker lives on and trains the next job."""

import asyncio
import dataclasses

import pytest
import torch
from bus_helpers import upload, wait_status
from trainer_harness import chat_example, job_events, method, trainer_services
from tunery_trainer.loop import train


@pytest.fixture
async def trainer(nats_url, model_cache, tmp_path):
    async with trainer_services(nats_url, model_cache, tmp_path / "work") as services:
        await upload(services.bus, "acme", "file-train", [chat_example(i) for i in range(12)])
        yield services


class OutOfMemoryOnce:
    """The real loop, whose device runs out of memory after the first step of its first run."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, model_dir, data, hp, seed, work_dir, hooks, resume_from=None, **options):
        self.runs += 1
        if self.runs == 1:
            report = hooks.on_metrics

            def on_metrics(metrics: dict) -> None:
                report(metrics)
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

            hooks = dataclasses.replace(hooks, on_metrics=on_metrics)
        return train(model_dir, data, hp, seed, work_dir, hooks, resume_from, **options)


async def test_out_of_memory_fails_the_job_with_advice_and_the_worker_goes_on(trainer):
    bus = trainer.bus
    request = {"training_file": "file-train", "method": method(n_epochs=1, batch_size=4)}
    job = await trainer.create(**request)
    stop = asyncio.Event()
    runner = asyncio.create_task(trainer.worker(OutOfMemoryOnce()).run(stop))
    failed = await wait_status(bus, "acme", job.id, {"succeeded", "failed"})
    assert failed["status"] == "failed" and failed["lease_owner"] is None
    error = failed["error"]
    assert error["code"] == "out_of_memory"
    assert error["param"] == "method.supervised.hyperparameters.batch_size"
    assert "CUDA out of memory" in error["message"]
    assert all(advice in error["message"] for advice in ("batch_size", '"4bit"', "max_seq_len"))
    assert (await job_events(bus, job.id))[-1].message == error["message"]

    # The same worker trains the next job: the OOM cost one job, not the worker.
    after = await trainer.create(**request)
    done = await wait_status(bus, "acme", after.id, {"succeeded", "failed"})
    stop.set()
    await runner
    assert done["status"] == "succeeded", done["error"]


async def test_a_lora_target_the_model_lacks_fails_before_training(trainer):
    bus = trainer.bus
    trainer.control.model_cache = None  # as when the base model is not built where the control plane runs
    job = await trainer.create(
        training_file="file-train", method=method(n_epochs=1, lora={"target_modules": ["q_proj", "qkv_proj"]})
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(trainer.worker().run(stop))
    failed = await wait_status(bus, "acme", job.id, {"succeeded", "failed"})
    stop.set()
    await runner
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_hyperparameters"
    assert failed["error"]["param"] == "method.supervised.hyperparameters.lora.target_modules"
    assert "'qkv_proj' is not a module of this model" in failed["error"]["message"]
    whats = [e.what for e in await job_events(bus, job.id)]
    assert "started" not in whats and "metrics" not in whats
