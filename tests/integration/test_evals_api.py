"""The Evals API end to end in one process: a real NATS, the real inference and eval-judge gRPC
services (tiny model), an eval-run worker, and the gateway driven by the official openai client."""

import asyncio

import grpc
import openai
import pytest
from bus_helpers import wait_record
from gateway_harness import serve_gateway
from tunery.evaljudge.v1 import evaljudge_pb2_grpc
from tunery.inference.v1 import inference_pb2_grpc
from tunery_common.bus import Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_evaljudge.compare import compare_pass_fail
from tunery_evaljudge.eval_runs import EvalRunWorker
from tunery_evaljudge.evals_control import EvalsControl
from tunery_evaljudge.general_set import MIX_ADVICE, eval_items
from tunery_evaljudge.graders.basic import json_valid
from tunery_evaljudge.settings import EvalJudgeSettings
from tunery_gateway.settings import GatewaySettings
from tunery_inference.engine_pool import EnginePool
from tunery_inference.registry import ModelRegistry
from tunery_inference.service import InferenceService

MODEL = "tiny-random-llama"
FINAL = {"completed", "failed", "canceled"}

ITEMS = [
    {"question": "My invoice is wrong", "category": "billing"},
    {"question": "The app crashes", "category": "technical"},
    {"question": "I was charged twice", "category": "billing"},
    {"question": "Login fails", "category": "technical"},
]
# Pre-filled answers: pass all / wrong class / not JSON / right class in other case.
SAMPLES = [
    '{"category": "billing"}',
    '{"category": "billing"}',
    "billing, I think",
    '{"category": "Technical"}',
]

CRITERIA = [
    {
        "type": "string_check",
        "name": "mentions category",
        "input": "{{sample.output_text}}",
        "reference": "{{item.category}}",
        "operation": "ilike",
    },
    {"type": "json_valid", "name": "json"},
    {
        "type": "classification",
        "name": "category",
        "input": "{{sample.output_json.category}}",
        "reference": "{{item.category}}",
        "labels": ["billing", "technical"],
    },
]
ITEM_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "category": {"type": "string"}},
    "required": ["question", "category"],
}


@pytest.fixture
async def stack(nats_url, model_cache, tmp_path, monkeypatch):
    bus = await Bus.connect(nats_url, "test")
    registry = ModelRegistry(bus, tmp_path / "adapters")
    inference = await start_grpc_server(
        0,
        [
            (
                inference_pb2_grpc.add_InferenceServicer_to_server,
                InferenceService(EnginePool(model_cache), registry),
                "Inference",
            )
        ],
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{inference.port}")
    inference_stub = inference_pb2_grpc.InferenceStub(channel)
    control = EvalsControl(bus, inference_stub)
    evaljudge = await start_grpc_server(
        0, [(evaljudge_pb2_grpc.add_EvalJudgeServicer_to_server, control, "EvalJudge")]
    )
    worker = EvalRunWorker(
        bus, inference_stub, EvalJudgeSettings(ack_wait_s=30, heartbeat_s=1, concurrency=2)
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme,k2:other")
    settings = GatewaySettings(
        nats_url=nats_url,
        home=tmp_path / "home",
        inference_addr=f"127.0.0.1:{inference.port}",
        evaljudge_addr=f"127.0.0.1:{evaljudge.port}",
    )
    with serve_gateway(settings) as url:
        clients = {
            key: openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=300)
            for key in ("k1", "k2")
        }
        yield bus, clients["k1"], clients["k2"], url
    stop.set()
    await running
    await channel.close()
    for server in (evaljudge, inference):
        await server.stop(0)
    await bus.close()


async def _finished(bus: Bus, client: openai.AsyncOpenAI, eval_id: str, run_id: str):
    await wait_record(bus.eval_runs, "acme", run_id, FINAL)
    return await client.evals.runs.retrieve(run_id, eval_id=eval_id)


async def _output_items(client: openai.AsyncOpenAI, eval_id: str, run_id: str) -> list:
    # limit=3: the paginator follows `after` across pages.
    return [item async for item in client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=3)]


async def test_jsonl_and_completions_runs_are_graded_and_compared(stack):
    bus, client, other, url = stack
    created = await client.evals.create(
        name="tickets",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=CRITERIA,
    )
    assert created.id.startswith("eval") and created.object == "eval" and created.name == "tickets"
    assert [c.name for c in created.testing_criteria] == ["mentions category", "json", "category"]
    assert (await client.evals.retrieve(created.id)).id == created.id

    content = [{"item": item, "sample": {"output_text": s}} for item, s in zip(ITEMS, SAMPLES, strict=True)]
    run = await client.evals.runs.create(
        created.id,
        name="prefilled",
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}},
    )
    assert run.status == "queued" and run.eval_id == created.id
    done = await _finished(bus, client, created.id, run.id)
    assert done.status == "completed", done.error
    assert done.result_counts.model_dump() == {"total": 4, "passed": 2, "failed": 2, "errored": 0}
    per_criterion = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert per_criterion == {"mentions category": (3, 1), "json": (3, 1), "category": (2, 2)}
    extras = done.model_extra["aggregates"]
    report = extras["criteria"]["category"]["classification"]
    assert report["accuracy"] == 0.5
    assert report["labels"] == ["billing", "technical", "(no label)"]
    assert report["confusion_matrix"] == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert extras["format_compliance_rate"] == 0.75
    assert done.model_extra["progress"] == {"n_done": 4, "n_items": 4}

    items = await _output_items(client, created.id, run.id)
    assert [i.datasource_item_id for i in items] == [0, 1, 2, 3]
    assert [i.status for i in items] == ["pass", "fail", "fail", "pass"]
    assert [i.datasource_item for i in items] == ITEMS
    assert [i.sample.output[0].content for i in items] == SAMPLES
    failed_only = await client.evals.runs.output_items.list(run.id, eval_id=created.id, status="fail")
    assert [i.datasource_item_id for i in failed_only.data] == [1, 2]

    # The model under test answers the same items: a completions run on the tiny model.
    answered = await client.evals.runs.create(
        created.id,
        name="tiny",
        data_source={
            "type": "completions",
            "model": MODEL,
            "input_messages": {
                "type": "template",
                "template": [
                    {"role": "system", "content": 'Answer with {"category": ...}.'},
                    {"role": "user", "content": "{{item.question}}"},
                ],
            },
            "sampling_params": {"max_completion_tokens": 8, "temperature": 0},
            "source": {"type": "file_content", "content": [{"item": item} for item in ITEMS]},
        },
    )
    finished = await _finished(bus, client, created.id, answered.id)
    assert finished.status == "completed", finished.error
    assert finished.model == MODEL and finished.result_counts.total == 4
    model_items = await _output_items(client, created.id, answered.id)
    for item, question in zip(model_items, ITEMS, strict=True):
        assert item.sample.input[-1].content == question["question"]
        output = item.sample.output[0].content
        by_name = {r.name: r for r in item.results}
        assert by_name["json"].passed == json_valid(output)
        assert by_name["mentions category"].passed == (question["category"].casefold() in output.casefold())
        assert item.sample.usage.completion_tokens <= 8
    usage = finished.per_model_usage[0]
    assert usage.run_model_name == MODEL and usage.completion_tokens == sum(
        i.sample.usage.completion_tokens for i in model_items
    )
    assert finished.model_extra["aggregates"]["latency"]["n"] == 4

    # The comparison's figures are compare.py's on the two runs' verdicts.
    http = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k1", max_retries=0)
    comparison = await http.get(
        f"/evals/{created.id}/compare",
        cast_to=object,
        options={"params": {"runs": f"{run.id},{answered.id}"}},
    )
    assert comparison["n_items"] == 4 and comparison["pairwise"] is None
    for entry in comparison["testing_criteria"]:
        index = [c["name"] for c in CRITERIA].index(entry["testing_criteria"])
        expected = compare_pass_fail(
            [i.results[index].passed is True for i in items],
            [i.results[index].passed is True for i in model_items],
        )
        got = entry["pass_fail"]
        assert (got["baseline_rate"], got["candidate_rate"], got["delta"]) == (
            expected.baseline_rate,
            expected.candidate_rate,
            expected.delta,
        )
        assert (got["ci_low"], got["ci_high"], got["p_value"], got["verdict"]) == (
            expected.ci_low,
            expected.ci_high,
            expected.p_value,
            expected.verdict,
        )

    # The report: standalone HTML with the bars, the confusion matrix and the comparison.
    html = (
        await http.get(
            f"/evals/{created.id}/runs/{answered.id}/report.html",
            cast_to=openai._legacy_response.HttpxBinaryResponseContent,
            options={"params": {"compare_with": run.id}},
        )
    ).text
    assert html.startswith("<!doctype html>") and "<svg" in html and "Confusion matrix: category" in html
    assert "http" not in html.split("<body>")[0]  # nothing fetched from elsewhere

    # Runs over other items do not compare.
    fewer = await client.evals.runs.create(
        created.id,
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": content[:3]}},
    )
    assert (await _finished(bus, client, created.id, fewer.id)).status == "completed"
    with pytest.raises(openai.BadRequestError) as bad:
        await http.get(
            f"/evals/{created.id}/compare",
            cast_to=object,
            options={"params": {"runs": f"{run.id},{fewer.id}"}},
        )
    assert bad.value.param == "runs" and "different items" in bad.value.message

    listed = [r.id async for r in client.evals.runs.list(created.id)]
    assert listed == [run.id, answered.id, fewer.id]  # oldest first, as OpenAI lists them

    # Another org sees none of it.
    with pytest.raises(openai.NotFoundError):
        await other.evals.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await other.evals.runs.retrieve(run.id, eval_id=created.id)
    assert [e.id async for e in other.evals.list()] == []


async def test_general_abilities_regression_is_reported_per_category(stack):
    bus, client, _, url = stack
    items = eval_items()
    created = await client.evals.create(
        name="general abilities",
        data_source_config={"type": "custom"},
        testing_criteria=[{"type": "item_check", "name": "general", "drop_threshold": 10}],
    )
    # The baseline answers every item with its reference; the candidate lost its arithmetic.
    forgot = "I would rather not do sums."
    answers = {
        "base": [item["reference"] for item in items],
        "tuned": [forgot if item["category"] == "arithmetic" else item["reference"] for item in items],
    }
    runs = {}
    for name, texts in answers.items():
        content = [{"item": item, "sample": {"output_text": t}} for item, t in zip(items, texts, strict=True)]
        runs[name] = (
            await client.evals.runs.create(
                created.id,
                name=name,
                data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}},
            )
        ).id
        done = await _finished(bus, client, created.id, runs[name])
        assert done.status == "completed", done.error
    assert done.result_counts.failed == sum(item["category"] == "arithmetic" for item in items)
    failing = await client.evals.runs.output_items.list(runs["tuned"], eval_id=created.id, status="fail")
    assert failing.data[0].results[0].model_extra["error"] == "no number in the answer"

    http = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k1", max_retries=0)
    comparison = await http.get(
        f"/evals/{created.id}/compare",
        cast_to=object,
        options={"params": {"runs": f"{runs['base']},{runs['tuned']}"}},
    )
    entry = comparison["testing_criteria"][0]
    assert entry["pass_fail"]["verdict"] == "worse"
    regression = entry["categories"]
    by_category = {c["category"]: c for c in regression["categories"]}
    assert set(by_category) == {"arithmetic", "instruction_following", "formatting", "factual"}
    assert by_category["arithmetic"] | {"flagged": True} == {
        "category": "arithmetic",
        "base_score": 100.0,
        "score": 0.0,
        "drop": 100.0,
        "flagged": True,
    }
    assert all(c["drop"] == 0 and not c["flagged"] for name, c in by_category.items() if name != "arithmetic")
    share = 100 * sum(item["category"] == "arithmetic" for item in items) / len(items)
    assert regression["overall"]["drop"] == pytest.approx(share)
    assert regression["flagged"] == ["arithmetic", "overall"] and MIX_ADVICE in regression["advice"]

    # The shipped set as a data source: the model under test answers every item.
    shipped = await client.evals.runs.create(
        created.id,
        name="tiny on the shipped set",
        data_source={
            "type": "completions",
            "model": MODEL,
            "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
            "sampling_params": {"max_completion_tokens": 4, "temperature": 0},
            "source": {"type": "general_abilities"},
        },
    )
    finished = await _finished(bus, client, created.id, shipped.id)
    assert finished.status == "completed", finished.error
    assert finished.result_counts.total == len(items) and finished.result_counts.errored == 0
    first = (await client.evals.runs.output_items.list(shipped.id, eval_id=created.id, limit=1)).data[0]
    assert first.datasource_item == items[0]
    assert first.sample.input[-1].content == items[0]["messages"][-1]["content"]


@pytest.mark.parametrize(
    ("criteria", "param"),
    [
        (
            [CRITERIA[0], {**CRITERIA[0], "name": "x", "operation": "sounds_like"}],
            "testing_criteria[1].operation",
        ),
        ([{"type": "python", "name": "p", "source": "def grade(): ..."}], "testing_criteria[0].type"),
        ([{**CRITERIA[2], "reference": "{{item.category"}], "testing_criteria[0].reference"),
        ([], "testing_criteria"),
    ],
)
async def test_bad_testing_criteria_are_a_400_naming_the_field(stack, criteria, param):
    _, client, _, _ = stack
    with pytest.raises(openai.BadRequestError) as bad:
        await client.evals.create(
            name="bad",
            data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA},
            testing_criteria=criteria,
        )
    assert bad.value.param == param


async def test_bad_run_data_is_a_400_naming_the_item(stack):
    _, client, _, _ = stack
    created = await client.evals.create(
        name="tickets",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA},
        testing_criteria=CRITERIA,
    )
    content = [{"item": ITEMS[0], "sample": {"output_text": "x"}}, {"item": {"question": "q"}, "sample": "y"}]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.evals.runs.create(
            created.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}}
        )
    assert bad.value.param == "data_source.source.content[1].item" and "category" in bad.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        await client.evals.runs.create(
            created.id,
            data_source={
                "type": "completions",
                "model": "no-such-model",
                "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                "source": {"type": "file_content", "content": [{"item": ITEMS[0]}]},
            },
        )
    assert missing.value.param == "data_source.model"
