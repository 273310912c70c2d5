"""Checkpoint models (`<fine-tuned model>:ckpt-step-<N>`) served like final ones: a real NATS, the
real inference gRPC service with the HF engine on the tiny model, and the gateway driven by the
official openai client."""

import asyncio

import grpc
import openai
import pytest
from adapter_helpers import BASE, make_lora, publish
from gateway_harness import serve_gateway
from tunery.common.v1 import common_pb2
from tunery.inference.v1 import inference_pb2, inference_pb2_grpc
from tunery_common.basemodels import ensure_base_model
from tunery_common.bus import Bus
from tunery_common.grpc_server import start_grpc_server
from tunery_gateway.settings import GatewaySettings
from tunery_inference.engine_pool import EnginePool
from tunery_inference.engines.hf import GenerationParams, HFEngine
from tunery_inference.registry import ModelRegistry
from tunery_inference.service import InferenceService

MESSAGES = [{"role": "user", "content": "Write a haiku about autumn."}]
MAX_TOKENS = 16
JOB = "ftjob-ckpt1"


@pytest.fixture(scope="module")
def adapters(model_cache, tmp_path_factory):
    """The tiny base, and two adapters with different weights: the final model and step 3."""
    base_dir = ensure_base_model(BASE, model_cache)
    root = tmp_path_factory.mktemp("adapters")
    return base_dir, make_lora(base_dir, root / "final", seed=1), make_lora(base_dir, root / "step3", seed=2)


@pytest.fixture(scope="module")
def expected(adapters):
    """What the HF engine answers, greedily, for the base and each adapter loaded directly."""
    base_dir, final_dir, step3_dir = adapters
    engine = HFEngine(base_dir, device="cpu")
    engine.load_adapter("final", final_dir)
    engine.load_adapter("step3", step3_dir)
    params = GenerationParams(max_tokens=MAX_TOKENS, temperature=0)
    return {name: engine.generate(MESSAGES, name, params).text for name in (None, "final", "step3")}


@pytest.fixture
async def stack(nats_url, model_cache, tmp_path, monkeypatch):
    """Bus, registry, the inference gRPC server, and the gateway (in a thread) in front of it."""
    bus = await Bus.connect(nats_url, "test")
    registry = ModelRegistry(bus, tmp_path / "adapters")
    watch = asyncio.create_task(registry.watch())
    await registry.ready.wait()
    server = await start_grpc_server(
        0,
        [
            (
                inference_pb2_grpc.add_InferenceServicer_to_server,
                InferenceService(EnginePool(model_cache), registry),
                "Inference",
            )
        ],
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    monkeypatch.setenv("TUNERY_API_KEYS", "k1:acme,k2:other")
    settings = GatewaySettings(
        nats_url=nats_url, home=tmp_path / "home", inference_addr=f"127.0.0.1:{server.port}"
    )
    with serve_gateway(settings) as url:
        yield bus, registry, inference_pb2_grpc.InferenceStub(channel), url
    await channel.close()
    await server.stop(0)
    watch.cancel()
    await bus.close()


async def _chat(stub, org: str, model: str) -> str:
    reply = await stub.ChatCompletion(
        inference_pb2.ChatCompletionRequest(
            org=org,
            model=model,
            messages=[common_pb2.ChatMessage(**m) for m in MESSAGES],
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
    )
    return reply.content


async def _not_found(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    return info.value.details()


async def test_checkpoint_is_served_like_the_final_model(stack, adapters, expected):
    bus, registry, stub, url = stack
    final, _ = await publish(bus, "acme", JOB, adapters[1])
    checkpoint, revision = await publish(bus, "acme", JOB, adapters[2], step=3)
    assert checkpoint.id == f"{final.id}:ckpt-step-3"
    await registry.wait_applied(revision)

    # Each id gets its own adapter: the same answers as the engine with that adapter loaded.
    assert len(set(expected.values())) == 3
    assert await _chat(stub, "acme", checkpoint.id) == expected["step3"]
    assert await _chat(stub, "acme", final.id) == expected["final"]
    assert await _chat(stub, "acme", BASE) == expected[None]

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k1", max_retries=0, timeout=120)
    reply = await client.chat.completions.create(
        model=checkpoint.id, messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0
    )
    assert (reply.model, reply.choices[0].message.content) == (checkpoint.id, expected["step3"])

    retrieved = await client.models.retrieve(checkpoint.id)
    assert (retrieved.id, retrieved.owned_by, retrieved.parent) == (checkpoint.id, "acme", BASE)
    # Like OpenAI, /v1/models lists fine-tuned models but not their checkpoints.
    listed = [m.id async for m in client.models.list()]
    assert final.id in listed and checkpoint.id not in listed

    # Another org cannot see or use either.
    other = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k2", max_retries=0, timeout=120)
    with pytest.raises(openai.NotFoundError) as info:
        await other.models.retrieve(checkpoint.id)
    assert info.value.body["param"] == "model" and info.value.body["code"] == "model_not_found"
    assert "does not exist" in await _not_found(_chat(stub, "other", checkpoint.id))
    assert "does not exist" in await _not_found(_chat(stub, "other", final.id))


async def test_checkpoint_found_before_the_watch_sees_it(stack, adapters, expected):
    """A request that races the registry watch reads the checkpoint from the KV."""
    bus, registry, stub, _ = stack
    checkpoint, revision = await publish(bus, "acme", "ftjob-race", adapters[2], step=7)
    assert await _chat(stub, "acme", checkpoint.id) == expected["step3"]
    await registry.wait_applied(revision)
    assert await _chat(stub, "acme", checkpoint.id) == expected["step3"]


async def test_unknown_and_mismatched_checkpoint_ids_are_not_found(stack, adapters):
    bus, registry, stub, _ = stack
    final, _ = await publish(bus, "acme", JOB, adapters[1])
    _, revision = await publish(bus, "acme", JOB, adapters[2], step=3)
    await registry.wait_applied(revision)
    for model_id in (
        f"{final.id}:ckpt-step-4",  # no such step
        f"{final.id}:ckpt-step-x",
        f"ft:{BASE}:acme:other-suffix:{JOB}:ckpt-step-3",  # the key exists, the id does not match
        f"ft:{BASE}:acme:sfx:ftjob-no such job:ckpt-step-3",  # not a valid KV key
    ):
        assert "does not exist" in await _not_found(_chat(stub, "acme", model_id)), model_id
        await _not_found(stub.GetModel(inference_pb2.GetModelRequest(org="acme", id=model_id)))


@pytest.mark.parametrize("how", ["kv-delete", "status-deleted"])
async def test_deleted_checkpoint_is_no_longer_served(stack, adapters, expected, how):
    bus, registry, stub, _ = stack
    final, _ = await publish(bus, "acme", JOB, adapters[1])
    checkpoint, revision = await publish(bus, "acme", JOB, adapters[2], step=3)
    await registry.wait_applied(revision)
    assert await _chat(stub, "acme", checkpoint.id) == expected["step3"]  # loaded in the engine

    if how == "kv-delete":
        await bus.models.delete("acme", checkpoint.key_id)
        revision = (await bus.models.kv.status()).stream_info.state.last_seq
    else:
        revision = await bus.models.put(
            "acme", checkpoint.key_id, checkpoint.model_copy(update={"status": "deleted"})
        )
    await registry.wait_applied(revision)

    await _not_found(_chat(stub, "acme", checkpoint.id))
    await _not_found(stub.GetModel(inference_pb2.GetModelRequest(org="acme", id=checkpoint.id)))
    assert not (registry.adapter_dir / "acme" / checkpoint.key_id).exists()
    # The final model of the same job is untouched.
    assert await _chat(stub, "acme", final.id) == expected["final"]
