"""A training worker over real NATS: queue → lease → LoRA training → adapter published."""

import asyncio
import json

import grpc
import pytest
from bus_helpers import upload, wait_status
from tunery.dataprep.v1 import dataprep_pb2_grpc
from tunery.trainer.v1 import trainer_pb2
from tunery_common.adapters import unpack_adapter
from tunery_common.bus import Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_dataprep.service import DataPrepService
from tunery_trainer.control import TrainerControl
from tunery_trainer.settings import TrainerSettings
from tunery_trainer.worker import TrainWorker


def example(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"number {i}"},
            {"role": "assistant", "content": ["even", "odd"][i % 2]},
        ]
    }


@pytest.fixture
async def services(nats_url, model_cache, tmp_path):
    bus = await Bus.connect(nats_url, "test")
    dataprep = await start_grpc_server(
        0, [(dataprep_pb2_grpc.add_DataPrepServicer_to_server, DataPrepService(bus, model_cache), "DataPrep")]
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{dataprep.port}")
    control = TrainerControl(bus, dataprep_pb2_grpc.DataPrepStub(channel))
    settings = TrainerSettings(ack_wait_s=30, heartbeat_s=1)
    worker = TrainWorker(bus, settings, tmp_path / "work", model_cache)
    yield bus, control, worker
    await channel.close()
    await dataprep.stop(0)
    await bus.close()


async def test_worker_trains_and_publishes_the_adapter(services, tmp_path):
    bus, control, worker = services
    await upload(bus, "acme", "file-train", [example(i) for i in range(16)])
    job = await control._create(
        trainer_pb2.CreateJobRequest(
            org="acme", model="tiny-random-llama", training_file="file-train", suffix="parity", seed=1
        )
    )
    await wait_status(bus, "acme", job.id, {"queued"})

    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    done = await wait_status(bus, "acme", job.id, {"succeeded", "failed"})
    stop.set()
    await runner
    assert done["status"] == "succeeded", done["error"]
    assert done["fine_tuned_model"] == f"ft:tiny-random-llama:acme:parity:{job.id}"
    assert done["trained_tokens"] > 0 and done["lease_owner"] is None
    assert done["method"]["supervised"]["hyperparameters"]["n_epochs"] == 7  # auto: ceil(100 / 16)

    model = await bus.models.get("acme", job.id)
    assert model.parent == "tiny-random-llama"
    folder = unpack_adapter(await bus.get_object(model.adapter_object), tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and not config.get("modules_to_save")
    events = [e.what for e in await bus.read_events("job", job.id)]
    assert events[:4] == ["created", "validating", "queued", "started"]
    assert "metrics" in events and events[-1] == "succeeded"
    assert [e.what for e in await bus.read_events("model", job.id)] == ["published"]
