"""A training worker over real NATS: queue → lease → LoRA training → checkpoints, adapter, results."""

import asyncio
import csv
import io
import json

import pytest
from bus_helpers import upload, wait_status
from trainer_harness import chat_example, job_events, method, preference_example, trainer_services
from tunery.common.v1 import common_pb2
from tunery.trainer.v1 import trainer_pb2
from tunery_common.adapters import unpack_adapter
from tunery_common.records import checkpoint_model_id, model_key_id
from tunery_trainer import checkpoints as checkpoint_store


@pytest.fixture
async def trainer(nats_url, model_cache, tmp_path):
    async with trainer_services(nats_url, model_cache, tmp_path / "work") as services:
        yield services


async def run_until_done(trainer, job_id: str) -> dict:
    stop = asyncio.Event()
    runner = asyncio.create_task(trainer.worker().run(stop))
    done = await wait_status(trainer.bus, "acme", job_id, {"succeeded", "failed"})
    stop.set()
    await runner
    return done


async def test_worker_trains_checkpoints_and_publishes_the_best_adapter(trainer, tmp_path):
    bus = trainer.bus
    await upload(bus, "acme", "file-train", [chat_example(i) for i in range(16)])
    await upload(bus, "acme", "file-valid", [chat_example(i) for i in range(100, 106)])
    # 4 steps per epoch, 12 in all: checkpoints every 3 steps and at each epoch end.
    job = await trainer.create(
        training_file="file-train",
        validation_file="file-valid",
        suffix="parity",
        seed=1,
        method=method(n_epochs=3, batch_size=4, checkpoint_every_steps=3),
    )
    done = await run_until_done(trainer, job.id)
    assert done["status"] == "succeeded", done["error"]
    fine_tuned = f"ft:tiny-random-llama:acme:parity:{job.id}"
    assert done["fine_tuned_model"] == fine_tuned
    assert done["trained_tokens"] > 0 and done["lease_owner"] is None
    hp = done["method"]["supervised"]["hyperparameters"]
    assert (hp["n_epochs"], hp["batch_size"], hp["learning_rate_multiplier"]) == (3, 4, 1.0)

    events = await job_events(bus, job.id)
    assert [e.what for e in events][:4] == ["created", "validating", "queued", "started"]
    reports = [dict(e.data) for e in events if e.what == "metrics"]
    by_step = {int(r["step"]): r for r in reports}
    assert sorted(by_step) == list(range(1, 13))

    # Checkpoints: OpenAI's objects in the record, a servable model each, one training state kept.
    checkpoints = done["checkpoints"]
    steps = [c["step_number"] for c in checkpoints]
    assert steps == [s for s in range(1, 13) if s % 3 == 0 or s % 4 == 0]
    assert [c["state_object"] is not None for c in checkpoints] == [False] * (len(steps) - 1) + [True]
    await bus.get_object(checkpoints[-1]["state_object"])
    for older in steps[:-1]:
        with pytest.raises(FileNotFoundError):
            await bus.get_object(f"checkpoints/acme/{job.id}/step-{older}.tar")
    for checkpoint in checkpoints:
        step = checkpoint["step_number"]
        assert checkpoint["fine_tuned_model_checkpoint"] == checkpoint_model_id(fine_tuned, step)
        assert checkpoint["metrics"]["train_loss"] == by_step[step]["train_loss"]
        assert checkpoint["metrics"]["valid_loss"] == by_step[step]["valid_loss"]
        model = await bus.models.get("acme", model_key_id(job.id, step))
        assert (model.id, model.checkpoint_step, model.parent) == (
            checkpoint["fine_tuned_model_checkpoint"],
            step,
            "tiny-random-llama",
        )
    folder = unpack_adapter(
        await bus.get_object((await bus.models.get("acme", model_key_id(job.id, steps[0]))).adapter_object),
        tmp_path / "checkpoint-adapter",
    )
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert [e.what for e in events].count("checkpoint") == len(steps)

    # The listing: newest first, paged.
    first = await trainer.stub.ListJobCheckpoints(
        trainer_pb2.ListJobCheckpointsRequest(org="acme", id=job.id, page=common_pb2.PageRequest(limit=2))
    )
    assert [c.step_number for c in first.checkpoints] == steps[::-1][:2] and first.has_more
    rest = await trainer.stub.ListJobCheckpoints(
        trainer_pb2.ListJobCheckpointsRequest(
            org="acme", id=job.id, page=common_pb2.PageRequest(after=first.checkpoints[-1].id, limit=100)
        )
    )
    assert [c.step_number for c in rest.checkpoints] == steps[::-1][2:] and not rest.has_more
    assert first.checkpoints[0].fine_tuning_job_id == job.id

    # The published adapter is the one with the lowest validation loss, and the event says so.
    best = min(reports, key=lambda r: r["valid_loss"])
    succeeded = events[-1]
    assert succeeded.what == "succeeded" and int(succeeded.data["step"]) == int(best["step"])
    assert f"step {int(best['step'])}, the one with the lowest validation loss" in succeeded.message
    model = await bus.models.get("acme", job.id)
    assert model.id == fine_tuned and model.checkpoint_step is None
    folder = unpack_adapter(await bus.get_object(model.adapter_object), tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and not config.get("modules_to_save")
    assert [e.what for e in await bus.read_events("model", job.id)] == ["published"]

    # The result file: every report as CSV, OpenAI's columns first.
    [file_id] = done["result_files"]
    record = await bus.files.get("acme", file_id)
    assert (record.filename, record.purpose) == ("step_metrics.csv", "fine-tune-results")
    rows = list(csv.DictReader(io.StringIO((await bus.get_object(record.object_name)).decode())))
    assert list(rows[0])[:5] == [
        "step",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
    ]
    assert {"full_valid_loss", "learning_rate", "trained_tokens"} <= set(rows[0])
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert [float(r["train_loss"]) for r in rows] == [by_step[s]["train_loss"] for s in range(1, 13)]
    assert [float(r["train_accuracy"]) for r in rows] == [
        by_step[s]["train_mean_token_accuracy"] for s in range(1, 13)
    ]


async def test_a_dpo_job_trains_on_preference_pairs(trainer):
    bus = trainer.bus
    await upload(bus, "acme", "file-pairs", [preference_example(i) for i in range(12)])
    job = await trainer.create(
        training_file="file-pairs", seed=2, method=method("dpo", n_epochs=1, batch_size=4)
    )
    done = await run_until_done(trainer, job.id)
    assert done["status"] == "succeeded", done["error"]
    hp = done["method"]["dpo"]["hyperparameters"]
    assert (hp["n_epochs"], hp["batch_size"], hp["beta"]) == (1, 4, 0.1)
    assert (await bus.models.get("acme", job.id)).id == done["fine_tuned_model"]
    reports = [e.data for e in await job_events(bus, job.id) if e.what == "metrics"]
    assert [int(r["step"]) for r in reports] == [1, 2, 3]
    assert all(r["train_loss"] > 0 for r in reports)


async def test_a_job_keeps_its_newest_checkpoints(trainer, monkeypatch):
    monkeypatch.setattr(checkpoint_store, "MAX_CHECKPOINTS", 3)
    bus = trainer.bus
    await upload(bus, "acme", "file-train", [chat_example(i) for i in range(12)])
    job = await trainer.create(
        training_file="file-train", method=method(n_epochs=2, batch_size=4, checkpoint_every_steps=1)
    )
    done = await run_until_done(trainer, job.id)
    assert done["status"] == "succeeded", done["error"]
    assert [c["step_number"] for c in done["checkpoints"]] == [4, 5, 6]
    for step in range(1, 7):
        model = await bus.models.get("acme", model_key_id(job.id, step))
        assert (model is not None) == (step >= 4)
    for step in (1, 2, 3):
        with pytest.raises(FileNotFoundError):
            await bus.get_object(f"adapters/acme/{model_key_id(job.id, step)}.tar")


async def test_truncated_examples_are_reported_as_a_warning(trainer):
    bus = trainer.bus
    await upload(bus, "acme", "file-train", [chat_example(i) for i in range(12)])
    job = await trainer.create(
        training_file="file-train", method=method(n_epochs=1, batch_size=4, max_seq_len=16)
    )
    done = await run_until_done(trainer, job.id)
    assert done["status"] == "succeeded", done["error"]
    [warning] = [e for e in await job_events(bus, job.id) if e.what == "examples_truncated"]
    assert warning.level == "warn" and warning.data["max_seq_len"] == 16
    assert warning.message.startswith(
        f"{int(warning.data['n_truncated'])} examples are longer than max_seq_len=16"
    )
