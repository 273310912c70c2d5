"""Job creation through real gRPC servers (trainer control plane + data-prep) over real NATS."""

import grpc
import pytest
from bus_helpers import upload, wait_status
from google.protobuf import struct_pb2
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunery_common.bus import TRAIN_STREAM, Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_dataprep.service import DataPrepService
from tunery_trainer.control import TrainerControl

GOOD = {"messages": [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]}


@pytest.fixture
async def stack(nats_url, model_cache):
    bus = await Bus.connect(nats_url, "test")
    dataprep_server = await start_grpc_server(
        0, [(dataprep_pb2_grpc.add_DataPrepServicer_to_server, DataPrepService(bus, model_cache), "DataPrep")]
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{dataprep_server.port}")
    control = TrainerControl(bus, dataprep_pb2_grpc.DataPrepStub(channel))
    trainer_server = await start_grpc_server(
        0, [(trainer_pb2_grpc.add_TrainerServicer_to_server, control, "Trainer")]
    )
    trainer_channel = grpc.aio.insecure_channel(f"127.0.0.1:{trainer_server.port}")
    yield bus, trainer_pb2_grpc.TrainerStub(trainer_channel), dataprep_pb2_grpc.DataPrepStub(channel)
    await trainer_channel.close()
    await channel.close()
    await trainer_server.stop(0)
    await dataprep_server.stop(0)
    await bus.close()


async def test_valid_file_is_queued_and_invalid_file_fails_with_its_line(stack):
    bus, trainer, _ = stack
    await upload(bus, "acme", "file-good", [GOOD] * 12)
    job = await trainer.CreateJob(
        trainer_pb2.CreateJobRequest(org="acme", model="tiny-random-llama", training_file="file-good", seed=7)
    )
    assert job.status == "validating_files"
    assert (await wait_status(bus, "acme", job.id, {"queued", "failed"}))["status"] == "queued"
    assert (await bus.js.stream_info(TRAIN_STREAM)).state.messages == 1

    await upload(bus, "acme", "file-bad", [GOOD] * 12 + ['{"messages": [{"role": "user"}]}'])
    bad = await trainer.CreateJob(
        trainer_pb2.CreateJobRequest(org="acme", model="tiny-random-llama", training_file="file-bad")
    )
    failed = await wait_status(bus, "acme", bad.id, {"queued", "failed"})
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_training_file"
    assert failed["error"]["param"] == "training_file"
    assert failed["error"]["message"].startswith("line 13: ")

    events = await trainer.ListJobEvents(trainer_pb2.ListJobEventsRequest(org="acme", id=bad.id))
    assert [e.what for e in events.events][:1] == ["failed"]  # newest first
    listed = await trainer.ListJobs(trainer_pb2.ListJobsRequest(org="acme"))
    assert {j.id for j in listed.jobs} == {bad.id, job.id}


async def test_bad_requests_name_their_param(stack):
    bus, trainer, _ = stack
    await upload(bus, "acme", "file-good", [GOOD] * 12)
    await upload(bus, "acme", "file-evals", [GOOD] * 12, purpose="evals")

    async def error_of(**kwargs):
        method = kwargs.pop("method", None)
        request = trainer_pb2.CreateJobRequest(org="acme", **kwargs)
        if method is not None:
            request.method.CopyFrom(method)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await trainer.CreateJob(request)
        return info.value.code(), dict(info.value.trailing_metadata()).get("param")

    assert await error_of(model="gpt-9", training_file="file-good") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "model",
    )
    assert await error_of(model="tiny-random-llama", training_file="file-nope") == (
        grpc.StatusCode.NOT_FOUND,
        "training_file",
    )
    assert await error_of(model="tiny-random-llama", training_file="file-evals") == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "training_file",
    )
    method = struct_pb2.Struct()
    method.update({"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "lr": 0.1}}})
    assert await error_of(model="tiny-random-llama", training_file="file-good", method=method) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "method.supervised.hyperparameters.lr",
    )
    # another org sees nothing
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer.GetJob(trainer_pb2.GetJobRequest(org="other", id="ftjob-x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_a_queued_job(stack):
    bus, trainer, _ = stack
    await upload(bus, "acme", "file-good", [GOOD] * 12)
    job = await trainer.CreateJob(
        trainer_pb2.CreateJobRequest(org="acme", model="tiny-random-llama", training_file="file-good")
    )
    await wait_status(bus, "acme", job.id, {"queued"})
    cancelled = await trainer.CancelJob(trainer_pb2.GetJobRequest(org="acme", id=job.id))
    assert cancelled.status == "cancelled"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer.CancelJob(trainer_pb2.GetJobRequest(org="acme", id=job.id))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_dataprep_reports_tokens(stack):
    bus, _, dataprep = stack
    await upload(bus, "acme", "file-good", [GOOD] * 12)
    report = await dataprep.ValidateFile(
        dataprep_pb2.ValidateFileRequest(org="acme", file_id="file-good", model="tiny-random-llama")
    )
    assert report.n_examples == 12 and report.n_errors == 0
    assert report.total_tokens > report.assistant_tokens > 0


async def test_an_unknown_cursor_is_an_error_naming_after(stack):
    _, trainer, _ = stack
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer.ListJobs(
            trainer_pb2.ListJobsRequest(org="acme", page={"after": "ftjob-gone", "limit": 5})
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(info.value.trailing_metadata())["param"] == "after"
