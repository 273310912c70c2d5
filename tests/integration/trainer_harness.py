"""The trainer's parts for tests: a real NATS, data-prep and trainer gRPC servers, and workers.

`HeldTrain` is the real training loop, held in its first metrics report until the test has acted
(paused the job, shut the worker down, redelivered its message): the job is then certainly in the
middle of a run, whatever the machine's speed.
"""

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import struct_pb2
from tunery.dataprep.v1 import dataprep_pb2_grpc
from tunery.events.v1 import events_pb2
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import Bus, RecordStore
from tunery_common.grpc_server import start_grpc_server
from tunery_dataprep.service import DataPrepService
from tunery_trainer.control import TrainerControl
from tunery_trainer.loop import train
from tunery_trainer.settings import TrainerSettings
from tunery_trainer.worker import TrainWorker

MODEL = "tiny-random-llama"
HOLD_TIMEOUT_S = 600  # against hangs only


def chat_example(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"number {i}"},
            {"role": "assistant", "content": ["even", "odd"][i % 2]},
        ]
    }


def preference_example(i: int) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": f"Is {i} even or odd?"}]},
        "preferred_output": [{"role": "assistant", "content": ["even", "odd"][i % 2]}],
        "non_preferred_output": [{"role": "assistant", "content": ["odd", "even"][i % 2]}],
    }


def method(kind: str = "supervised", **hyperparameters) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({"type": kind, kind: {"hyperparameters": hyperparameters}})
    return struct


@dataclass
class Trainer:
    bus: Bus
    control: TrainerControl
    stub: trainer_pb2_grpc.TrainerStub
    address: str  # of the trainer gRPC server
    model_cache: Path
    work_dir: Path

    async def create(self, org: str = "acme", **fields) -> trainer_pb2.Job:
        hyperparameters = fields.pop("method", None)
        request = trainer_pb2.CreateJobRequest(org=org, model=MODEL, **fields)
        if hyperparameters is not None:
            request.method.CopyFrom(hyperparameters)
        return await self.stub.CreateJob(request)

    def worker(self, train_fn: Callable = train, **settings) -> TrainWorker:
        options = {"ack_wait_s": 30, "heartbeat_s": 1, **settings}
        return TrainWorker(
            self.bus, TrainerSettings(**options), self.work_dir, self.model_cache, train_fn=train_fn
        )


@asynccontextmanager
async def trainer_services(nats_url: str, model_cache: Path, work_dir: Path):
    """Data-prep and the trainer control plane as gRPC servers over one bus; workers come apart."""
    ensure_base_model(MODEL, model_cache)  # built once: the control plane checks adapters against it
    bus = await Bus.connect(nats_url, "test")
    dataprep = await start_grpc_server(
        0, [(dataprep_pb2_grpc.add_DataPrepServicer_to_server, DataPrepService(bus, model_cache), "DataPrep")]
    )
    dataprep_channel = grpc.aio.insecure_channel(f"127.0.0.1:{dataprep.port}")
    control = TrainerControl(bus, dataprep_pb2_grpc.DataPrepStub(dataprep_channel), model_cache=model_cache)
    server = await start_grpc_server(
        0, [(trainer_pb2_grpc.add_TrainerServicer_to_server, control, "Trainer")]
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = trainer_pb2_grpc.TrainerStub(channel)
        yield Trainer(bus, control, stub, f"127.0.0.1:{server.port}", model_cache, work_dir)
    finally:
        await channel.close()
        await dataprep_channel.close()
        await server.stop(0)
        await dataprep.stop(0)
        await bus.close()


async def wait_until(store: RecordStore, org: str, record_id: str, check: Callable[[dict], bool]) -> dict:
    """The record once `check` holds for it, from its KV watch (no polling)."""
    watcher = await store.kv.watch(store.key(org, record_id))
    try:
        async with asyncio.timeout(HOLD_TIMEOUT_S):
            async for entry in watcher:
                if entry is not None and entry.value and check(record := json.loads(entry.value)):
                    return record
    finally:
        await watcher.stop()


async def job_events(bus: Bus, job_id: str) -> list[events_pb2.Event]:
    return await bus.read_events("job", job_id)


def metrics_steps(events: list[events_pb2.Event]) -> list[int]:
    return [int(e.data["step"]) for e in events if e.what == "metrics"]


class HeldTrain:
    """The real `train`, held inside its first metrics report of the first run until released:
    by `release.set()`, or, with `until_stop`, as soon as the worker asks the loop to stop."""

    def __init__(self, until_stop: bool = False):
        self.until_stop = until_stop
        self.holding = threading.Event()  # the loop is held (its first report was sent)
        self.release = threading.Event()
        self._held = False

    def __call__(self, model_dir, data, hp, seed, work_dir, hooks, resume_from=None, **options):
        def on_metrics(report: dict) -> None:
            hooks.on_metrics(report)
            if not self._held:
                self._held = True
                self.holding.set()
                released = (
                    hooks.stop_requested.wait(HOLD_TIMEOUT_S)
                    if self.until_stop
                    else self.release.wait(HOLD_TIMEOUT_S)
                )
                assert released, "the held training run was never released"

        held_hooks = dataclasses.replace(hooks, on_metrics=on_metrics)
        return train(model_dir, data, hp, seed, work_dir, held_hooks, resume_from, **options)

    async def wait_holding(self) -> None:
        assert await asyncio.to_thread(self.holding.wait, HOLD_TIMEOUT_S), "training never reported"
