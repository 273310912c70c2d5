"""data-prep over real gRPC and real NATS: the dataset report, cost estimates, file validation."""

import json

import grpc
import pytest
from bus_helpers import upload
from tunery.dataprep.v1 import dataprep_pb2, dataprep_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_dataprep.report import build_report
from tunery_dataprep.service import DataPrepService
from tunery_dataprep.settings import DataPrepSettings

MODEL = "smollm2-135m-instruct"


def chat(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Classify the ticket."},
            {"role": "user", "content": f"Ticket {i}: my card was charged twice for order {i}."},
            {"role": "assistant", "content": ["billing", "shipping", "account"][i % 3]},
        ]
    }


@pytest.fixture
async def dataprep(nats_url, model_cache):
    bus = await Bus.connect(nats_url, "test")
    settings = DataPrepSettings(model_cache=model_cache)
    server = await start_grpc_server(
        0,
        [
            (
                dataprep_pb2_grpc.add_DataPrepServicer_to_server,
                DataPrepService(bus, model_cache, settings),
                "DataPrep",
            )
        ],
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield bus, dataprep_pb2_grpc.DataPrepStub(channel), settings
    await channel.close()
    await server.stop(0)
    await bus.close()


async def _error(call) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), dict(info.value.trailing_metadata()).get("param")


async def test_validate_dataset_answers_the_library_report(dataprep):
    bus, stub, settings = dataprep
    train = [chat(i) for i in range(30)] + ['{"messages": [{"role": "user"}]}']
    valid = [chat(i) for i in range(100, 106)]
    await upload(bus, "acme", "file-train", train)
    await upload(bus, "acme", "file-valid", valid)

    reply = await stub.ValidateDataset(
        dataprep_pb2.ValidateDatasetRequest(
            org="acme",
            file_id="file-train",
            validation_file_id="file-valid",
            model=MODEL,
            task="classification",
        )
    )
    report = json.loads(reply.json)
    # The same library offline gives the same report.
    data = "\n".join(json.dumps(r) if isinstance(r, dict) else r for r in train).encode()
    offline = build_report(
        data,
        "\n".join(json.dumps(r) for r in valid).encode(),
        model=MODEL,
        task="classification",
        settings=settings,
    )
    assert report == json.loads(offline.model_dump_json())
    assert (reply.n_examples, reply.n_errors, reply.n_epochs) == (31, 3, 4)  # 3 classes on line 31
    assert reply.total_tokens == report["tokens"]["total"] and reply.n_warnings == len(report["warnings"])
    assert report["errors"][0]["line"] == 31
    assert report["validation"]["n_valid_examples"] == 6


async def test_requests_are_checked(dataprep):
    bus, stub, _ = dataprep
    await upload(bus, "acme", "file-train", [chat(i) for i in range(12)])
    request = dataprep_pb2.ValidateDatasetRequest
    assert await _error(stub.ValidateDataset(request(org="acme", file_id="file-nope", model=MODEL))) == (
        grpc.StatusCode.NOT_FOUND,
        "file_id",
    )
    # another org's file is as unknown
    assert await _error(stub.ValidateDataset(request(org="other", file_id="file-train", model=MODEL))) == (
        grpc.StatusCode.NOT_FOUND,
        "file_id",
    )
    assert await _error(
        stub.ValidateDataset(
            request(org="acme", file_id="file-train", validation_file_id="file-x", model=MODEL)
        )
    ) == (grpc.StatusCode.NOT_FOUND, "validation_file_id")
    assert await _error(stub.ValidateDataset(request(org="acme", file_id="file-train", model="gpt-9"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "model",
    )
    assert await _error(
        stub.ValidateDataset(request(org="acme", file_id="file-train", model=MODEL, task="poetry"))
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "task")


async def test_estimate_cost_of_a_file_and_of_numbers(dataprep):
    bus, stub, _ = dataprep
    await upload(bus, "acme", "file-train", [chat(i) for i in range(50)])
    by_file = await stub.EstimateCost(
        dataprep_pb2.EstimateCostRequest(
            org="acme", file_id="file-train", model=MODEL, requests_per_day=100, input_tokens_per_request=200
        )
    )
    estimate = json.loads(by_file.json)
    assert (estimate["n_examples"], estimate["n_epochs"], by_file.n_epochs) == (50, 3, 3)
    assert by_file.trained_tokens == 3 * estimate["billing_tokens"] > 0
    assert estimate["inference_monthly"]["base"]["model"] == "gpt-4o"

    by_numbers = await stub.EstimateCost(
        dataprep_pb2.EstimateCostRequest(
            org="acme", n_examples=1000, tokens_per_example=500, model=MODEL, n_epochs=2
        )
    )
    assert by_numbers.trained_tokens == 1_000_000
    assert json.loads(by_numbers.json)["inference_monthly"] is None
    assert await _error(stub.EstimateCost(dataprep_pb2.EstimateCostRequest(org="acme", model=MODEL))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "file_id",
    )


async def test_validate_file_applies_the_training_minimum_only_when_asked(dataprep):
    bus, stub, _ = dataprep
    await upload(bus, "acme", "file-small", [chat(i) for i in range(3)])
    request = dataprep_pb2.ValidateFileRequest(org="acme", file_id="file-small", model=MODEL)
    assert (await stub.ValidateFile(request)).n_errors == 0
    request.training = True
    report = await stub.ValidateFile(request)
    assert [(e.line, e.code) for e in report.errors] == [(0, "not_enough_examples")]
    assert report.total_tokens > report.assistant_tokens > 0
