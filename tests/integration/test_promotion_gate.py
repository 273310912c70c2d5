"""The promotion gate end to end in one process: a real NATS, the real inference, trainer and
eval-judge gRPC services (tiny model), an eval-run worker, the promoter, and the gateway driven by
the official openai client. Models are published the way the trainer publishes them, then
evaluated through the real eval-run queue and real inference."""

import asyncio
import json

import grpc
import httpx
import openai
import pytest
from adapter_helpers import BASE, make_lora
from bus_helpers import upload
from gateway_harness import serve_gateway
from google.protobuf.json_format import MessageToDict
from tunery.evaljudge.v1 import evaljudge_pb2_grpc
from tunery.inference.v1 import inference_pb2_grpc
from tunery.trainer.v1 import trainer_pb2_grpc
from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_common.records import JobRecord
from tunery_evaljudge.eval_runs import EvalRunWorker
from tunery_evaljudge.evals_control import EvalsControl
from tunery_evaljudge.promotion import Promoter
from tunery_evaljudge.settings import EvalJudgeSettings
from tunery_gateway.settings import GatewaySettings
from tunery_inference.engine_pool import EnginePool
from tunery_inference.registry import ModelRegistry
from tunery_inference.service import InferenceService
from tunery_trainer.control import TrainerControl
from tunery_trainer.publish import publish_adapter

ORG = "acme"
ALIAS = f"ft:{BASE}:{ORG}:gate"
NEVER = "\u2603 no model writes this \u2603"
# "always" passes every answer, "never" none: the thresholds alone decide the verdict.
CRITERIA = [
    {
        "type": "string_check",
        "name": "always",
        "input": "{{sample.output_text}}",
        "reference": NEVER,
        "operation": "ne",
    },
    {
        "type": "string_check",
        "name": "never",
        "input": "{{sample.output_text}}",
        "reference": NEVER,
        "operation": "eq",
    },
]
# A chat file: each item ends with the reference answer, which the model under test must not see.
ITEMS = [
    {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    for question, answer in (("Hello", "Hi!"), ("Name a colour", "Teal"), ("2+2?", "4"))
]


@pytest.fixture
async def stack(nats_url, model_cache, tmp_path, monkeypatch):
    bus = await Bus.connect(nats_url, "test")
    registry = ModelRegistry(bus, tmp_path / "adapters")
    watch = asyncio.create_task(registry.watch())
    await registry.ready.wait()
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
    trainer = await start_grpc_server(
        0, [(trainer_pb2_grpc.add_TrainerServicer_to_server, TrainerControl(bus, dataprep=None), "Trainer")]
    )
    worker = EvalRunWorker(bus, inference_stub, EvalJudgeSettings(ack_wait_s=30, heartbeat_s=1))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme")
    settings = GatewaySettings(
        nats_url=nats_url,
        home=tmp_path / "home",
        inference_addr=f"127.0.0.1:{inference.port}",
        evaljudge_addr=f"127.0.0.1:{evaljudge.port}",
        trainer_addr=f"127.0.0.1:{trainer.port}",
    )
    with serve_gateway(settings) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k1", max_retries=0, timeout=300)
        yield bus, registry, control, client, url
    stop.set()
    await running
    await channel.close()
    for server in (trainer, evaljudge, inference):
        await server.stop(0)
    watch.cancel()
    await bus.close()


class RunningPromoter:
    """The promoter as eval-judge runs it, stoppable to leave a model pending, and restartable."""

    def __init__(self, control: EvalsControl):
        self.control = control

    async def __aenter__(self):
        self.stop = asyncio.Event()
        self.promoter = Promoter(self.control)
        self.task = asyncio.create_task(self.promoter.run(self.stop))
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        await self.task


async def wait_decided(bus: Bus, key_id: str) -> dict:
    """Waits on the model's KV watch (no polling) until it is promoted or rejected."""
    watcher = await bus.models.kv.watch(bus.models.key(ORG, key_id))
    try:
        async with asyncio.timeout(600):  # against hangs only: a loaded machine may take minutes
            async for entry in watcher:
                if entry is not None and entry.value:
                    record = json.loads(entry.value)
                    if record["promotion"] in ("promoted", "rejected"):
                        return record
    finally:
        await watcher.stop()


async def applied(bus: Bus, registry: ModelRegistry, key_id: str) -> None:
    """Returns once this test's registry has seen the model's latest change."""
    _, revision = await bus.models.get_with_revision(ORG, key_id)
    await registry.wait_applied(revision)


async def gated_job(bus: Bus, job_id: str, eval_id: str, file_id: str, thresholds: dict) -> JobRecord:
    job = JobRecord(
        id=job_id,
        org=ORG,
        model=BASE,
        training_file=file_id,
        validation_file=file_id,
        status="succeeded",
        suffix="gate",
        eval={"eval_id": eval_id, "thresholds": thresholds, "sampling_params": {"max_completion_tokens": 3}},
    )
    await bus.jobs.create(ORG, job.id, job)
    return job


async def test_promoted_model_takes_the_alias_and_rejected_or_pending_ones_do_not(
    stack, model_cache, tmp_path
):
    bus, registry, control, client, url = stack
    base_dir = ensure_base_model(BASE, model_cache)
    gate_eval = await client.evals.create(
        name="gate", data_source_config={"type": "custom"}, testing_criteria=CRITERIA
    )
    await upload(bus, ORG, "file-valid", ITEMS)

    with pytest.raises(openai.NotFoundError) as missing:  # nothing promoted yet
        await client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["param"] == "model" and ALIAS in missing.value.body["message"]

    # A model whose eval meets its thresholds is promoted and serves the alias.
    good = await gated_job(bus, "ftjob-gatepass", gate_eval.id, "file-valid", {"always": 1.0})
    async with RunningPromoter(control):
        published = await publish_adapter(bus, good, make_lora(base_dir, tmp_path / "good", seed=1))
        assert published.promotion == "pending"
        decided = await wait_decided(bus, published.key_id)
    assert decided["promotion"] == "promoted", decided
    run = await client.evals.runs.retrieve(decided["eval_run_id"], eval_id=gate_eval.id)
    assert run.status == "completed" and run.model == published.id
    assert run.result_counts.total == len(ITEMS) and run.per_testing_criteria_results[0].passed == len(ITEMS)
    prompts = [
        o.sample.input async for o in client.evals.runs.output_items.list(run.id, eval_id=gate_eval.id)
    ]
    assert sorted((m.role, m.content) for prompt in prompts for m in prompt) == sorted(
        ("user", item["messages"][0]["content"]) for item in ITEMS
    )
    await applied(bus, registry, published.key_id)
    shown = await client.models.retrieve(ALIAS)
    assert shown.id == published.id
    assert shown.model_extra["promotion"] == "promoted" and shown.model_extra["eval_run_id"] == run.id
    answer = await client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert answer.choices[0].message.content is not None

    # A newer model with the same suffix is served by its own id while pending, never by the alias.
    bad = await gated_job(bus, "ftjob-gatefail", gate_eval.id, "file-valid", {"always": 1.0, "never": 0.5})
    pending = await publish_adapter(bus, bad, make_lora(base_dir, tmp_path / "bad", seed=2))
    await applied(bus, registry, pending.key_id)
    assert (await client.models.retrieve(ALIAS)).id == published.id
    direct = await client.models.retrieve(pending.id)
    assert direct.model_extra["promotion"] == "pending"

    # The promoter (re)starts, replays the registry, runs the eval: "never" fails, so rejected.
    async with RunningPromoter(control):
        decided = await wait_decided(bus, pending.key_id)
    assert decided["promotion"] == "rejected"
    assert "never 0.0 < 0.5" in decided["promotion_reason"]
    await applied(bus, registry, pending.key_id)
    assert (await client.models.retrieve(ALIAS)).id == published.id
    events = {e.what: e for e in await bus.read_events("model", pending.key_id)}
    assert "rejected" in events and "promoted" not in events
    failed = MessageToDict(events["rejected"].data)["failed_thresholds"]
    assert failed == [{"threshold": "never", "minimum": 0.5, "value": 0.0}]
    assert "promoted" in {e.what for e in await bus.read_events("model", published.key_id)}

    # Restarting once more changes nothing: decisions are final and announced once.
    async with RunningPromoter(control) as restarted:
        await restarted.promoter.replayed.wait()  # it has seen both decided models and their runs
    assert (await bus.models.get(ORG, pending.key_id)).promotion == "rejected"
    rejected_events = [e for e in await bus.read_events("model", pending.key_id) if e.what == "rejected"]
    assert len(rejected_events) == 1


async def test_job_eval_is_checked_at_creation(stack):
    bus, _, _, client, url = stack
    await upload(bus, ORG, "file-train", [{"messages": [{"role": "user", "content": "a"}]}])
    gate_eval = await client.evals.create(
        name="gate", data_source_config={"type": "custom"}, testing_criteria=CRITERIA
    )
    base = {"model": BASE, "training_file": "file-train", "validation_file": "file-train"}
    cases = [
        ({"eval_id": "eval_nope", "thresholds": {"always": 1}}, 400, "eval.eval_id"),
        ({"eval_id": gate_eval.id, "thresholds": {"sometimes": 1}}, 400, "eval.thresholds.sometimes"),
        ({"eval_id": gate_eval.id, "thresholds": {"always": 2}}, 400, "eval.thresholds.always"),
        ({"eval_id": gate_eval.id, "thresholds": {"always": 1}, "file_id": "file-nope"}, 404, "eval.file_id"),
        ({"testing_criteria": [{"type": "string_check", "name": "x"}], "thresholds": {"x": 1}}, 400, None),
        ({"eval_id": gate_eval.id}, 400, "eval.thresholds"),
    ]
    async with httpx.AsyncClient(base_url=f"{url}/v1", headers={"Authorization": "Bearer k1"}) as http:
        for gate, status, param in cases:
            reply = await http.post("/fine_tuning/jobs", json=base | {"eval": gate})
            assert reply.status_code == status, (gate, reply.text)
            error = reply.json()["error"]
            if param is None:  # the inline criterion's own field, as eval-judge names it
                assert error["param"].startswith("eval.testing_criteria[0]"), error
            else:
                assert error["param"] == param, error
        # A refused job leaves no eval behind for its inline criteria.
        assert [e.id async for e in client.evals.list()] == [gate_eval.id]
