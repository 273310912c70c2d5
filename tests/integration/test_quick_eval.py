"""Quick evals through real gRPC servers (data-prep, inference on the tiny model, eval-judge) and NATS."""

import asyncio
import json
from statistics import mean

import grpc
import pytest
from bus_helpers import upload, wait_record
from tunery.dataprep.v1 import dataprep_pb2_grpc
from tunery.evaljudge.v1 import evaljudge_pb2, evaljudge_pb2_grpc
from tunery.inference.v1 import inference_pb2_grpc
from tunery_common.bus import EVAL_STREAM, Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_dataprep.service import DataPrepService
from tunery_evaljudge.control import QuickEvalControl
from tunery_evaljudge.graders.basic import exact_match, json_valid
from tunery_evaljudge.settings import EvalJudgeSettings
from tunery_evaljudge.worker import QuickEvalWorker
from tunery_inference.engine_pool import EnginePool
from tunery_inference.registry import ModelRegistry
from tunery_inference.service import InferenceService

MODEL = "tiny-random-llama"


def example(i: int) -> dict:
    answer = json.dumps({"n": i}) if i % 2 else f"answer {i}"
    return {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": answer},
        ]
    }


@pytest.fixture
async def services(nats_url, model_cache, tmp_path):
    bus = await Bus.connect(nats_url, "test")
    dataprep = await start_grpc_server(
        0, [(dataprep_pb2_grpc.add_DataPrepServicer_to_server, DataPrepService(bus, model_cache), "DataPrep")]
    )
    inference_service = InferenceService(EnginePool(model_cache), ModelRegistry(bus, tmp_path / "adapters"))
    inference = await start_grpc_server(
        0, [(inference_pb2_grpc.add_InferenceServicer_to_server, inference_service, "Inference")]
    )
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") for server in (dataprep, inference)]
    dataprep_stub = dataprep_pb2_grpc.DataPrepStub(channels[0])
    inference_stub = inference_pb2_grpc.InferenceStub(channels[1])
    control = QuickEvalControl(bus, inference_stub, dataprep_stub)
    evaljudge = await start_grpc_server(
        0, [(evaljudge_pb2_grpc.add_EvalJudgeServicer_to_server, control, "EvalJudge")]
    )
    channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{evaljudge.port}"))
    # Two requests in flight: the lanes of one eval share its items.
    settings = EvalJudgeSettings(ack_wait_s=30, heartbeat_s=1, concurrency=2)
    worker = QuickEvalWorker(bus, inference_stub, settings)
    yield bus, evaljudge_pb2_grpc.EvalJudgeStub(channels[-1]), worker
    for channel in channels:
        await channel.close()
    for server in (evaljudge, inference, dataprep):
        await server.stop(0)
    await bus.close()


async def test_quick_eval_runs_on_a_worker_and_reports_consistent_results(services):
    bus, evaljudge, worker = services
    await upload(bus, "acme", "file-evals", [example(i) for i in range(6)], purpose="evals")
    created = await evaljudge.CreateQuickEval(
        evaljudge_pb2.CreateQuickEvalRequest(org="acme", model=MODEL, file_id="file-evals", max_tokens=8)
    )
    assert created.id.startswith("qeval-") and created.status == "queued"
    assert (created.n_items, created.n_done, created.max_tokens) == (6, 0, 8)
    assert not created.HasField("exact_match_rate") and not created.results
    assert (await bus.js.stream_info(EVAL_STREAM)).state.messages == 1

    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    done = await wait_record(bus.evals, "acme", created.id, {"succeeded", "failed"})
    stop.set()
    await runner
    assert done["status"] == "succeeded", done["error"]
    assert done["lease_owner"] is None and done["finished_at"] >= done["created_at"]
    assert (await bus.js.stream_info(EVAL_STREAM)).state.messages == 0  # acked

    got = await evaljudge.GetQuickEval(evaljudge_pb2.GetQuickEvalRequest(org="acme", id=created.id))
    assert (got.n_items, got.n_done) == (6, 6)
    results = list(got.results)
    assert [(r.index, r.line) for r in results] == [(i, i + 1) for i in range(6)]
    for i, r in enumerate(results):
        assert (r.prompt, r.expected) == (f"question {i}", example(i)["messages"][-1]["content"])
        assert isinstance(r.output, str) and r.output and not r.error
        assert r.exact_match == exact_match(r.output, r.expected)
        assert r.json_valid == json_valid(r.output)
        assert r.latency_ms >= 0
    assert got.exact_match_rate == pytest.approx(mean(r.exact_match for r in results))
    assert got.json_valid_rate == pytest.approx(mean(r.json_valid for r in results))

    events = await evaljudge.ListQuickEvalEvents(
        evaljudge_pb2.ListQuickEvalEventsRequest(org="acme", id=created.id)
    )
    whats = [e.what for e in reversed(events.events)]  # oldest first
    assert whats[:2] == ["created", "started"] and whats[-1] == "succeeded"
    progress = [e for e in reversed(events.events) if e.what == "progress"]
    assert set(whats[2:-1]) == {"progress"} and len(progress) == 6  # 6 items: one report each
    assert all(e.type == "metrics" for e in progress)
    last = json.loads(json.dumps(dict(progress[-1].data)))
    assert (last["n_done"], last["n_items"], last["eta_s"]) == (6, 6, 0)
    assert last["exact_match_rate"] == pytest.approx(got.exact_match_rate)
    assert [int(e.data["n_done"]) for e in progress] == [1, 2, 3, 4, 5, 6]

    # Greedy decoding: the same model on the same file answers the same way.
    again = await evaljudge.CreateQuickEval(
        evaljudge_pb2.CreateQuickEvalRequest(
            org="acme", model=MODEL, file_id="file-evals", max_items=2, max_tokens=8
        )
    )
    assert again.n_items == 2
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    await wait_record(bus.evals, "acme", again.id, {"succeeded", "failed"})
    stop.set()
    await runner
    rerun = await evaljudge.GetQuickEval(evaljudge_pb2.GetQuickEvalRequest(org="acme", id=again.id))
    assert [r.output for r in rerun.results] == [r.output for r in results[:2]]

    listed = await evaljudge.ListQuickEvals(evaljudge_pb2.ListQuickEvalsRequest(org="acme"))
    assert [e.id for e in listed.quick_evals] == [again.id, created.id]  # newest first
    assert not any(e.results for e in listed.quick_evals)
    assert (
        await evaljudge.ListQuickEvals(evaljudge_pb2.ListQuickEvalsRequest(org="other"))
    ).quick_evals == []

    # The graders' own RPC is served by the same servicer.
    grades = await evaljudge.GradeSamples(
        evaljudge_pb2.GradeSamplesRequest(
            samples=[evaljudge_pb2.Sample(output='{"a":1}', reference='{"a": 1}')]
        )
    )
    assert grades.exact_match_rate == 1.0


async def _error_of(evaljudge, **kwargs) -> tuple[grpc.StatusCode, str | None, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaljudge.CreateQuickEval(evaljudge_pb2.CreateQuickEvalRequest(org="acme", **kwargs))
    return info.value.code(), dict(info.value.trailing_metadata()).get("param"), info.value.details()


async def test_bad_requests_name_their_param(services):
    bus, evaljudge, _ = services
    good = [example(i) for i in range(3)]
    await upload(bus, "acme", "file-good", good, purpose="evals")
    await upload(bus, "other", "file-theirs", good, purpose="evals")
    await upload(bus, "acme", "file-broken", [*good[:2], '{"messages": [{"role": "user"}]}'], purpose="evals")
    no_answer = {"messages": [*good[0]["messages"], {"role": "user", "content": "and then?"}]}
    await upload(bus, "acme", "file-no-answer", [no_answer], purpose="fine-tune")

    code, param, _ = await _error_of(evaljudge, model=MODEL, file_id="file-nope")
    assert (code, param) == (grpc.StatusCode.NOT_FOUND, "file_id")
    code, param, _ = await _error_of(evaljudge, model=MODEL, file_id="file-theirs")
    assert (code, param) == (grpc.StatusCode.NOT_FOUND, "file_id")
    code, param, _ = await _error_of(evaljudge, model="gpt-nope", file_id="file-good")
    assert (code, param) == (grpc.StatusCode.NOT_FOUND, "model")
    code, param, message = await _error_of(evaljudge, model=MODEL, file_id="file-broken")
    assert (code, param) == (grpc.StatusCode.INVALID_ARGUMENT, "file_id")
    assert message.startswith("line 3: ")
    code, param, message = await _error_of(evaljudge, model=MODEL, file_id="file-no-answer")
    assert (code, param) == (grpc.StatusCode.INVALID_ARGUMENT, "file_id")
    assert message.startswith("line 1: ")
    code, param, _ = await _error_of(evaljudge, model=MODEL, file_id="file-good", max_items=0)
    assert (code, param) == (grpc.StatusCode.INVALID_ARGUMENT, "max_items")
    assert await bus.evals.list() == []  # nothing was created

    created = await evaljudge.CreateQuickEval(
        evaljudge_pb2.CreateQuickEvalRequest(org="acme", model=MODEL, file_id="file-good")
    )
    for call, request in (
        (evaljudge.GetQuickEval, evaljudge_pb2.GetQuickEvalRequest(org="other", id=created.id)),
        (evaljudge.ListQuickEvalEvents, evaljudge_pb2.ListQuickEvalEventsRequest(org="other", id=created.id)),
        (evaljudge.GetQuickEval, evaljudge_pb2.GetQuickEvalRequest(org="acme", id="qeval-nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
