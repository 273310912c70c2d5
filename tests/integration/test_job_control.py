"""Job creation through real gRPC servers (trainer control plane + data-prep) over real NATS."""

import grpc
import pytest
from bus_helpers import upload, wait_status
from google.protobuf import struct_pb2
from trainer_harness import method, preference_example
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from tunery_common.basemodels import ensure_base_model
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
    ensure_base_model("tiny-random-llama", model_cache)  # adapters are checked against it at create time
    control = TrainerControl(bus, dataprep_pb2_grpc.DataPrepStub(channel), model_cache=model_cache)
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


async def test_method_errors_name_the_full_path(stack):
    bus, trainer, _ = stack
    await upload(bus, "acme", "file-good", [GOOD] * 12)

    async def error_of(method_struct: struct_pb2.Struct):
        request = trainer_pb2.CreateJobRequest(
            org="acme", model="tiny-random-llama", training_file="file-good"
        )
        request.method.CopyFrom(method_struct)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await trainer.CreateJob(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        metadata = dict(info.value.trailing_metadata())
        assert info.value.details()
        return metadata.get("param"), metadata.get("code")

    hp = "method.supervised.hyperparameters"
    assert (await error_of(method(lora={"rank": 8})))[0] == f"{hp}.lora.rank"
    assert (await error_of(method(lora={"target_modules": ["q_proj", ""]})))[
        0
    ] == f"{hp}.lora.target_modules[1]"
    assert (await error_of(method(n_epochs="many")))[0] == f"{hp}.n_epochs"
    assert (await error_of(method("dpo", beta=-1)))[0] == "method.dpo.hyperparameters.beta"
    reinforcement = struct_pb2.Struct()
    reinforcement.update({"type": "reinforcement"})
    assert (await error_of(reinforcement))[0] == "method.type"
    mixed = struct_pb2.Struct()
    mixed.update({"type": "supervised", "dpo": {"hyperparameters": {"beta": 0.2}}})
    assert (await error_of(mixed))[0] == "method.dpo"
    # Checked against the base model and the serving engine before anything is queued.
    assert await error_of(method(lora={"r": 128})) == (f"{hp}.lora.r", "invalid_hyperparameters")
    assert await error_of(method("dpo", lora={"target_modules": ["lm_head"]})) == (
        "method.dpo.hyperparameters.lora.target_modules",
        "invalid_hyperparameters",
    )
    assert (await bus.js.stream_info(TRAIN_STREAM)).state.messages == 0


async def test_a_file_in_the_wrong_format_for_the_method_fails_the_job(stack):
    bus, trainer, _ = stack
    await upload(bus, "acme", "file-chat", [GOOD] * 12)
    await upload(bus, "acme", "file-pairs", [preference_example(i) for i in range(12)])

    async def failure(training_file: str, kind: str) -> dict:
        request = trainer_pb2.CreateJobRequest(
            org="acme", model="tiny-random-llama", training_file=training_file
        )
        request.method.CopyFrom(method(kind))
        job = await trainer.CreateJob(request)
        return await wait_status(bus, "acme", job.id, {"queued", "failed"})

    dpo_on_chat = await failure("file-chat", "dpo")
    assert dpo_on_chat["status"] == "failed"
    assert (dpo_on_chat["error"]["code"], dpo_on_chat["error"]["param"]) == (
        "invalid_training_file",
        "training_file",
    )
    assert "needs a training file in preference format" in dpo_on_chat["error"]["message"]
    assert "file-chat is in chat format" in dpo_on_chat["error"]["message"]

    supervised_on_pairs = await failure("file-pairs", "supervised")
    assert supervised_on_pairs["status"] == "failed"
    assert "needs a training file in chat format" in supervised_on_pairs["error"]["message"]

    assert (await failure("file-pairs", "dpo"))["status"] == "queued"


async def test_pause_and_resume_a_queued_job(stack):
    bus, trainer, _ = stack
    await upload(bus, "acme", "file-good", [GOOD] * 12)
    job = await trainer.CreateJob(
        trainer_pb2.CreateJobRequest(org="acme", model="tiny-random-llama", training_file="file-good")
    )
    await wait_status(bus, "acme", job.id, {"queued"})
    ref = trainer_pb2.GetJobRequest(org="acme", id=job.id)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer.ResumeJob(ref)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == f"job {job.id} is queued; only a paused job can be resumed"

    assert (await trainer.PauseJob(ref)).status == "paused"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer.PauseJob(ref)
    assert info.value.details() == f"job {job.id} is paused; only a running or queued job can be paused"

    resumed = await trainer.ResumeJob(ref)
    assert resumed.status == "queued"
    # Its first message is dropped by the worker that gets it (the job was paused): resuming
    # enqueues it again.
    assert (await bus.js.stream_info(TRAIN_STREAM)).state.messages == 2
    whats = [
        e.what
        for e in (await trainer.ListJobEvents(trainer_pb2.ListJobEventsRequest(org="acme", id=job.id))).events
    ]
    assert whats[:2] == ["queued", "paused"]  # newest first

    await trainer.CancelJob(ref)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer.PauseJob(ref)
    assert info.value.details() == f"job {job.id} is cancelled; only a running or queued job can be paused"

    listed = await trainer.ListJobCheckpoints(trainer_pb2.ListJobCheckpointsRequest(org="acme", id=job.id))
    assert list(listed.checkpoints) == [] and not listed.has_more
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await trainer.ListJobCheckpoints(trainer_pb2.ListJobCheckpointsRequest(org="other", id=job.id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
